"""`mrsuperres train`: PSNR- and GAN-stage training of the 1-channel generator, resumable.

Stages (Real-ESRGAN / seed 002): `psnr` = L1 only, Adam lr 2e-4; `gan` = L1 + perceptual
(VGG before ReLU) + adversarial against a 1-channel UNetDiscriminatorSN, lr 1e-4. Adam betas
(0.9, 0.99) for both networks, EMA of the generator (decay 0.999); the exported model is the
EMA. Targets are not unsharp-masked (that biases fidelity metrics against the ground truth).

GAN loss default: `vanilla` (binary cross-entropy on the per-pixel logits). Seed 001 calls its
feedback relativistic, but the code it builds on (Real-ESRGAN) trains its U-Net discriminator
with the vanilla loss, the pretrained Real-ESRGAN discriminator was trained so (seed 004
fine-tunes from it), and a relativistic average over per-pixel logits is not what ESRGAN's
RaGAN was designed for. `--gan-loss ragan` gives the relativistic average loss (seed 002).

Flow of one run: validate every input (nothing is written before that) -> event log `start`
or `resumed` -> iterations -> `progress` / `validation` / `checkpoint` events -> on the last
iteration, a STOP file or SIGTERM/SIGINT: a checkpoint, `RUN/model.safetensors` + card, and
`done` or `stopped`.
"""
from __future__ import annotations

import copy
import json
import os
import random
import signal
import sys
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from . import checkpoints
from .errors import MRSuperResError
from .events import EventLog
from .inference import autocast, resolve_precision
from .rrdbnet import RRDBNet
from .training_data import HR_NOISE_SIGMA

PRESETS = {
    # seed 001: L1 + perceptual + GAN, each weight 1
    "paper": dict(l1_weight=1.0, perceptual_weight=1.0, gan_weight=1.0,
                  layers={"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}),
    # train_realesrgan_x4plus.yml
    "realesrgan": dict(l1_weight=1.0, perceptual_weight=1.0, gan_weight=0.1,
                       layers={"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}),
    # seed 002: L = L_percep + 5e-3 L_adv + 1e-2 L_content, ESRGAN's conv5_4 features, RaGAN
    "thesis": dict(l1_weight=0.01, perceptual_weight=1.0, gan_weight=0.005, layers={"conv5_4": 1.0},
                   gan_loss="ragan"),
}
STAGE_LR = {"psnr": 2e-4, "gan": 1e-4}
# options that may change between a run and its --resume
RESUME_MAY_CHANGE = {"iters", "device", "precision", "checkpoint_every", "log_every", "val_every", "resume",
                     "config", "keep", "lr"}     # a lower --lr on resume is how a fine-tune is finished

EXIT_DONE, EXIT_ERROR, EXIT_STOPPED = 0, 2, 3


@dataclass
class TrainConfig:
    data: list = field(default_factory=list)
    out: str = ""
    val: list = field(default_factory=list)
    stage: str = "psnr"
    preset: str = "realesrgan"
    init: str = "scratch"
    init_d: str = "scratch"
    scale: int = 4
    blocks: int | None = None          # None: 23, or the init model's
    features: int | None = None        # None: 64, or the init model's
    growth: int | None = None          # None: 32, or the init model's
    d_features: int = 64
    iters: int = 1000
    batch: int = 4
    patch: int = 128
    degrade: str = "bilinear"
    hr_noise: float = 0.0
    hr_noise_sigma: list | str = field(default_factory=lambda: list(HR_NOISE_SIGMA))   # [lo, hi] or "lo,hi"
    axis: str = "2"
    lr: float | None = None
    ema_decay: float = 0.999
    gan_loss: str | None = None
    l1_weight: float | None = None
    perceptual_weight: float | None = None
    gan_weight: float | None = None
    checkpoint_every: int = 500
    val_every: int | None = None       # None: with every checkpoint
    log_every: int = 10
    keep: int = 3
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    resume: bool = False
    config: str | None = None

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def load_toml(path: str) -> dict:
    import tomllib

    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise MRSuperResError(f"config file not found: {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MRSuperResError(f"cannot read config file {path}: {exc}") from None
    options = {k.replace("-", "_"): v for k, v in raw.items()}
    unknown = sorted(set(options) - set(TrainConfig.option_names()))
    if unknown:
        raise MRSuperResError(f"{path}: unknown option(s) {', '.join(unknown)}")
    for key in ("data", "val"):
        if isinstance(options.get(key), str):
            options[key] = [options[key]]
    return options


def build_config(cli_options: dict) -> TrainConfig:
    """Defaults <- TOML file (--config) <- explicit command-line flags."""
    options = {}
    if cli_options.get("config"):
        options.update(load_toml(cli_options["config"]))
    options.update({k: v for k, v in cli_options.items() if v is not None and v != []})
    config = TrainConfig(**options)
    check_config(config)
    return config


def check_config(c: TrainConfig) -> None:
    from .mri_degradation import parse_degradations
    from .training_data import axes_for

    if not c.data:
        raise MRSuperResError("no training volumes given (--data)")
    if not c.out:
        raise MRSuperResError("no run folder given (--out)")
    if c.stage not in STAGE_LR:
        raise MRSuperResError(f"--stage must be psnr or gan, not {c.stage!r}")
    if c.preset not in PRESETS:
        raise MRSuperResError(f"--preset must be one of {', '.join(PRESETS)}, not {c.preset!r}")
    if c.scale not in (2, 4, 8):
        raise MRSuperResError(f"--scale must be 2, 4 or 8, not {c.scale}")
    for name in ("iters", "batch", "patch", "checkpoint_every", "log_every", "keep", "d_features"):
        if int(getattr(c, name)) < 1:
            raise MRSuperResError(f"--{name.replace('_', '-')} must be at least 1")
    if c.patch % (8 * c.scale if c.stage == "gan" else c.scale) or c.patch % 8:
        raise MRSuperResError(f"--patch {c.patch} must be a multiple of 8 and of 8 x scale for the GAN stage "
                              f"(the discriminator halves it three times)")
    if c.gan_loss not in (None, "vanilla", "ragan"):
        raise MRSuperResError(f"--gan-loss must be vanilla or ragan, not {c.gan_loss!r}")
    if c.precision not in ("auto", "fp32", "bf16", "fp16"):
        raise MRSuperResError(f"--precision must be auto, fp32, bf16 or fp16, not {c.precision!r}")
    if not 0 <= c.ema_decay < 1:
        raise MRSuperResError("--ema-decay must be in [0, 1)")
    parse_degradations(c.degrade)
    if not 0 <= c.hr_noise <= 1:
        raise MRSuperResError("--hr-noise is a probability: give a number in [0, 1]")
    c.hr_noise_sigma = parse_noise_sigma(c.hr_noise_sigma)
    axes_for(c.axis)


def parse_noise_sigma(value) -> list[float]:
    """--hr-noise-sigma "lo,hi" (or a [lo, hi] list) -> [lo, hi] with 0 <= lo <= hi <= 0.5."""
    try:
        parts = [float(v) for v in (value.split(",") if isinstance(value, str) else value)]
    except (TypeError, ValueError):
        parts = []
    if len(parts) != 2 or not 0 <= parts[0] <= parts[1] <= 0.5:
        raise MRSuperResError(f"--hr-noise-sigma must be 'lo,hi' with 0 <= lo <= hi <= 0.5 (fractions of the "
                              f"[0, 1] range), not {value!r}")
    return parts


def recorded_noise_sigma(hr_noise: float, sigma) -> list[float] | None:
    """What a card says of the `--hr-noise` sigma range: None without noise; the default range
    for runs and cards from before --hr-noise-sigma existed (they have none recorded)."""
    return (list(sigma) if sigma else list(HR_NOISE_SIGMA)) if hr_noise else None


# ----------------------------------------------------------------------------- pieces

def clean_targets(noisy: np.ndarray, device) -> torch.Tensor | None:
    """Indices of a batch's samples without `--hr-noise` on their target (None: all of them)."""
    return torch.from_numpy(np.flatnonzero(~noisy)).to(device) if noisy.any() else None


def noisy_target_losses(stage: str, hr_noise: float) -> str | None:
    """For a model card: which losses the `--hr-noise` targets trained (None: there were none)."""
    if not hr_noise:
        return None
    return "l1 only (perceptual, adversarial and discriminator: clean targets only)" if stage == "gan" else "l1"


# what a model card passes on to the cards of models fine-tuned from it (their provenance)
PROVENANCE_KEYS = ("name", "sha256", "init", "stage", "training_data", "degradations", "hr_noise", "hr_noise_sigma",
                   "axis", "patch", "batch", "iterations", "learning_rate_schedule", "ema_decay", "weights",
                   "device", "precision", "wall_seconds", "metrics", "init_provenance")


def resolve_init(config: TrainConfig) -> tuple[RRDBNet, str, dict | None]:
    """The starting generator, a description of where it came from, and (for a trained model)
    the training record from its card, so a chain of fine-tunes stays traceable."""
    from .catalog import REALESRGAN_MODEL, load_model

    if config.init == "scratch":
        torch.manual_seed(config.seed)
        model = RRDBNet(1, 1, scale=config.scale, num_feat=config.features or 64,
                        num_block=config.blocks or 23, num_grow_ch=config.growth or 32)
        return model, "scratch (BasicSR initialisation)", None
    spec = REALESRGAN_MODEL if config.init == "realesrgan" else config.init
    if Path(spec).is_dir():
        spec = str(Path(spec) / "model.safetensors")
    model, card = load_model(spec)
    if model.scale != config.scale:
        raise MRSuperResError(f"--init model '{card.get('name')}' is x{model.scale}, but --scale {config.scale} "
                              "was asked")
    arch = model.config
    for flag, key in (("blocks", "num_block"), ("features", "num_feat"), ("growth", "num_grow_ch")):
        wanted = getattr(config, flag)
        if wanted is not None and wanted != arch[key]:
            raise MRSuperResError(f"--{flag} {wanted} differs from the --init model's {arch[key]}")
    record = {k: card[k] for k in PROVENANCE_KEYS if k in card} if card.get("iterations") else None
    if record:
        record["hr_noise_sigma"] = recorded_noise_sigma(record.get("hr_noise"), record.get("hr_noise_sigma"))
    return model, f"{card.get('name')} (sha256 {card.get('sha256') or 'n/a'})", record


def resolve_init_d(config: TrainConfig):
    from .discriminator import UNetDiscriminatorSN, discriminator_from_state
    from .weights import read_state_dict

    if config.stage != "gan":
        return None, "none (psnr stage)"
    if config.init_d == "scratch":
        torch.manual_seed(config.seed + 1)
        return UNetDiscriminatorSN(1, config.d_features), "scratch"
    path = Path(config.init_d)
    if not path.exists():
        raise MRSuperResError(f"--init-d file not found: {path}")
    if path.suffix == ".pt":                    # one of our training checkpoints
        try:
            d_state = checkpoints.read_checkpoint(path).get("discriminator")
        except Exception as exc:
            raise MRSuperResError(f"cannot read --init-d {path}: {' '.join(str(exc).split())[:160]}") from None
        if not d_state:
            raise MRSuperResError(f"--init-d {path} holds no discriminator")
    else:                                       # .pth / .safetensors, BasicSR keys
        d_state = read_state_dict(path)
    return discriminator_from_state(d_state, str(path)), str(path)


def gan_loss(kind: str, pred: torch.Tensor, target_real: bool, other: torch.Tensor | None = None) -> torch.Tensor:
    """Vanilla BCE on logits, or relativistic average: logit minus the mean of the other side's."""
    logits = pred.float() if kind == "vanilla" else pred.float() - other.float().mean()
    target = torch.ones_like(logits) if target_real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def validate(ema: RRDBNet, val, device, precision, generator: RRDBNet | None = None) -> dict | None:
    """Mean SSIM/PSNR/VIF of the EMA ("model"), the raw generator if given, and bicubic. VIF is
    what a GAN checkpoint is picked by: the perceptual and adversarial losses trade SSIM/PSNR
    for texture, and VIF says whether that texture still carries the reference's information."""
    from .inference import super_resolve_slices
    from .metrics import slice_metrics
    from .resample import upsample

    if val is None:
        return None
    lr, hr = val
    prec = "fp32" if precision == "fp16" else precision
    preds = [("model", super_resolve_slices(ema, lr, device=device, precision=prec))]
    if generator is not None:
        was_training = generator.training
        preds.append(("generator", super_resolve_slices(generator.eval(), lr, device=device, precision=prec)))
        generator.train(was_training)
    preds.append(("bicubic", np.clip(upsample(lr, ema.scale, "bicubic"), 0, 1)))
    out = {}
    for name, pred in preds:
        rows = [slice_metrics(h, p) for h, p in zip(hr, pred)]      # the same metrics as `evaluate`
        out[name] = {"ssim": float(np.mean([r["ssim"] for r in rows])),
                     "psnr": float(np.mean([r["psnr"] for r in rows])),
                     "vif": float(np.nanmean([r["vif"] for r in rows]))}
    return out


# ----------------------------------------------------------------------------- the run

class StopRequest:
    """SIGTERM/SIGINT or a STOP file in the run folder ask for a graceful stop."""

    def __init__(self, run: Path):
        self.stop_file = run / "STOP"
        self.reason = None
        self._previous = {}

    def install(self) -> None:
        import threading
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        self.reason = "signal"

    def requested(self) -> bool:
        if self.reason is None and self.stop_file.exists():
            self.reason = "stop file"
        return self.reason is not None


class Trainer:
    """Holds everything a run needs; `prepare` validates and loads, `run` trains."""

    def __init__(self, config: TrainConfig, progress_bar: bool | None = None):
        self.config = config
        self.run_dir = Path(config.out)
        self.progress_bar = sys.stderr.isatty() if progress_bar is None else progress_bar
        self.deferred_warnings: list[str] = []

    # -- validation of inputs: nothing is written here
    def prepare(self) -> None:
        from .inference import select_device
        from .mri_degradation import parse_degradations
        from .training_data import load_pools, validation_set

        c = self.config
        check_config(c)                         # also when the config was built without build_config
        run = self.run_dir
        if run.exists() and not run.is_dir():
            raise MRSuperResError(f"--out {run} exists and is not a folder")
        parent = run if run.exists() else run.parent
        if not parent.exists():
            raise MRSuperResError(f"--out {run}: folder {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise MRSuperResError(f"--out {run} is not writable")
        has_run = (run / "events.jsonl").exists() or bool(checkpoints.list_checkpoints(run))
        self.resume_state = None
        if c.resume:
            found = checkpoints.load_latest(run, warn=self._defer_warning)
            if found is None:
                raise MRSuperResError(f"--resume: no valid checkpoint in {checkpoints.checkpoint_dir(run)}")
            self.resume_state, self.resume_path = found
            saved = self.resume_state["config"]
            defaults = {f.name: f.default if f.default_factory is MISSING else f.default_factory()
                        for f in fields(TrainConfig)}     # for options newer than the run
            diff = [k for k in TrainConfig.option_names()
                    if k not in RESUME_MAY_CHANGE and saved.get(k, defaults.get(k)) != getattr(c, k)]
            if diff:
                raise MRSuperResError(f"--resume needs the same options as the run; these differ: {', '.join(diff)}")
            if self.resume_state["iter"] >= c.iters:
                raise MRSuperResError(f"the run already reached {self.resume_state['iter']} iterations; "
                                      f"raise --iters to go on")
        elif has_run:
            raise MRSuperResError(f"{run} already holds a training run: add --resume to continue it, "
                                  "or choose another --out")
        self.device = select_device(c.device)
        self.precision = resolve_precision(c.precision, self.device)
        self.methods = parse_degradations(c.degrade)
        self.pool, val_slices, self.split, self.train_infos, self.val_infos = load_pools(
            c.data, c.val, c.axis, c.patch)
        self.val = validation_set(val_slices, c.scale)
        self.generator, self.init_desc, self.init_record = resolve_init(c)
        self.discriminator, self.init_d_desc = resolve_init_d(c)
        preset = PRESETS[c.preset]
        self.weights = {k: (getattr(c, k) if getattr(c, k) is not None else preset[k])
                        for k in ("l1_weight", "perceptual_weight", "gan_weight")}
        self.gan_kind = c.gan_loss or preset.get("gan_loss", "vanilla")
        self.vgg, self.vgg_layers, self.vgg_desc = None, {}, None
        if c.stage == "gan" and self.weights["perceptual_weight"] > 0:
            from .vgg import load_vgg
            self.vgg, self.vgg_layers, self.vgg_desc = load_vgg(preset["layers"])

    def _defer_warning(self, message: str) -> None:
        """Checkpoint warnings found while validating; logged once the run has started."""
        self.deferred_warnings.append(message)

    # -- the loop
    def run(self) -> int:
        c = self.config
        run = self.run_dir
        run.mkdir(parents=True, exist_ok=True)
        checkpoints.remove_partials(run)
        self.log = EventLog(run / "events.jsonl")
        stop = StopRequest(run)
        stop.stop_file.unlink(missing_ok=True)     # a STOP left by a stopped run must not stop its resume
        stop.install()
        start_iter = 0
        try:
            self._build_training_state()
            if self.resume_state is not None:
                start_iter = self._restore(self.resume_state)
                for message in self.deferred_warnings:
                    self.log.write("warning", start_iter, message=message)
                self.log.write("resumed", start_iter, checkpoint=str(self.resume_path), **self._describe())
            else:
                (run / "config.json").write_text(json.dumps(asdict(c), indent=2) + "\n")
                self.log.write("start", 0, **self._describe())
            return self._loop(start_iter, stop)
        except MRSuperResError as exc:
            self.log.write("error", getattr(self, "iteration", start_iter), message=str(exc))
            raise
        except Exception as exc:
            self.log.write("error", getattr(self, "iteration", start_iter), message=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            stop.restore()
            self.log.close()

    def _build_training_state(self) -> None:
        c = self.config
        lr = c.lr or STAGE_LR[c.stage]
        self.lr = lr
        cl = torch.channels_last
        self.generator = self.generator.to(self.device, memory_format=cl).train()
        self.ema = copy.deepcopy(self.generator).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        fast = dict(fused=True) if self.device.type == "cuda" else dict(foreach=True)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(0.9, 0.99), **fast)
        self.opt_d = None
        if self.discriminator is not None:
            self.discriminator = self.discriminator.to(self.device, memory_format=cl).train()
            self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.9, 0.99), **fast)
        if self.vgg is not None:
            self.vgg = self.vgg.to(self.device, memory_format=cl)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.rng = np.random.default_rng(c.seed)
        torch.manual_seed(c.seed)
        random.seed(c.seed)
        self.wall_before = 0.0
        self.last_val = None
        self.lr_schedule = [[0, lr]]         # [from iteration, learning rate], one entry per change

    def _restore(self, state: dict) -> int:
        self.generator.load_state_dict(state["generator"])
        self.ema.load_state_dict(state["ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(state["discriminator"])
            self.opt_d.load_state_dict(state["opt_d"])
        for opt in (self.opt_g, self.opt_d):          # the saved optimiser state carries the old rate
            for group in (opt.param_groups if opt is not None else []):
                group["lr"] = self.lr
        saved_lr = state["config"].get("lr") or STAGE_LR[state["config"]["stage"]]
        self.lr_schedule = [list(x) for x in state.get("lr_schedule", [[0, saved_lr]])]
        if self.lr_schedule[-1][1] != self.lr:
            self.lr_schedule.append([int(state["iter"]), self.lr])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.rng.bit_generator.state = state["rng"]["numpy"]
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        self.wall_before = float(state.get("wall_seconds", 0.0))
        self.last_val = state.get("validation")
        return int(state["iter"])

    def _describe(self) -> dict:
        return dict(config=asdict(self.config), device=str(self.device), precision=self.precision,
                    parameters=sum(p.numel() for p in self.generator.parameters()),
                    architecture=self.generator.config, train_slices=len(self.pool),
                    val_slices=0 if self.val is None else len(self.val[1]), split=self.split,
                    init=self.init_desc, init_d=self.init_d_desc, loss_weights=self.weights,
                    gan_loss=self.gan_kind if self.config.stage == "gan" else None, vgg=self.vgg_desc,
                    lr=self.lr, lr_schedule=self.lr_schedule)

    def _checkpoint_state(self, iteration: int, wall: float) -> dict:
        return dict(
            config=asdict(self.config), generator=self.generator.state_dict(), ema=self.ema.state_dict(),
            discriminator=self.discriminator.state_dict() if self.discriminator is not None else None,
            opt_g=self.opt_g.state_dict(), opt_d=self.opt_d.state_dict() if self.opt_d else None,
            scaler=self.scaler.state_dict() if self.scaler else None,
            rng=dict(numpy=self.rng_state, torch=torch.get_rng_state(), python=random.getstate()),
            wall_seconds=wall, validation=self.last_val, lr_schedule=self.lr_schedule)

    def generator_losses(self, sr: torch.Tensor, hr_t: torch.Tensor, clean: torch.Tensor | None = None) -> dict:
        """The generator's unweighted losses on one batch: `l1`, and in the gan stage `perceptual`
        (when weighted) and `gan_g` (scripts/loss_gradients.py measures the same ones).

        `clean` (indices, or N bools) picks the targets without `--hr-noise`: L1 trains on every
        sample, the perceptual and adversarial losses only on clean ones, since on a noisy target
        they learn to paint noise texture rather than anatomy. Those two are means over the clean
        samples, so each clean one pulls N/clean times harder against L1 than in an all-clean
        batch; with no clean sample they are left out."""
        losses = {"l1": F.l1_loss(sr.float(), hr_t)}
        if self.config.stage == "gan":
            if clean is not None:
                sr, hr_t = sr[clean], hr_t[clean]
            if sr.shape[0] == 0:
                return losses
            d = self.discriminator
            if self.vgg is not None:
                f_sr, f_hr = self.vgg(sr), self.vgg(hr_t)
                losses["perceptual"] = sum(weight * F.l1_loss(f_sr[name].float(), f_hr[name].float())
                                           for name, weight in self.vgg_layers.items())
            fake_logits = d(sr)
            if self.gan_kind == "ragan":
                real_logits = d(hr_t).detach()
                losses["gan_g"] = (gan_loss("ragan", fake_logits, True, real_logits)
                                   + gan_loss("ragan", real_logits, False, fake_logits)) / 2
            else:
                losses["gan_g"] = gan_loss("vanilla", fake_logits, True)
        return losses

    def _step(self, lr_b: np.ndarray, hr_b: np.ndarray, noisy: np.ndarray | None = None) -> dict:
        dev, cl = self.device, torch.channels_last
        lr_t = torch.from_numpy(lr_b).to(dev).contiguous(memory_format=cl)
        hr_t = torch.from_numpy(hr_b).to(dev).contiguous(memory_format=cl)
        clean = None if noisy is None else clean_targets(noisy, dev)
        w = self.weights
        d = self.discriminator
        if d is not None:
            for p in d.parameters():
                p.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        with autocast(dev, self.precision):
            sr = self.generator(lr_t)
            losses = self.generator_losses(sr, hr_t, clean)
            total = w["l1_weight"] * losses["l1"]
            if "perceptual" in losses:
                total = total + w["perceptual_weight"] * losses["perceptual"]
            if "gan_g" in losses:
                total = total + w["gan_weight"] * losses["gan_g"]
        self._backward(total, self.opt_g)
        losses["total_g"] = total
        if d is not None:
            real, fake = hr_t, sr.detach()
            if clean is not None:              # the discriminator learns what clean anatomy looks like
                real, fake = real[clean], fake[clean]
            if real.shape[0] > 0:              # no clean target: no discriminator step, no d losses logged
                for p in d.parameters():
                    p.requires_grad_(True)
                self.opt_d.zero_grad(set_to_none=True)
                with autocast(dev, self.precision):
                    real_logits = d(real)
                    fake_logits = d(fake)
                    if self.gan_kind == "ragan":
                        d_real = gan_loss("ragan", real_logits, True, fake_logits.detach())
                        d_fake = gan_loss("ragan", fake_logits, False, real_logits.detach())
                    else:
                        d_real = gan_loss("vanilla", real_logits, True)
                        d_fake = gan_loss("vanilla", fake_logits, False)
                self._backward(d_real + d_fake, self.opt_d)
                losses["d_real"], losses["d_fake"] = d_real, d_fake
        ema_update(self.ema, self.generator, self.config.ema_decay)
        values = {k: float(v.detach()) for k, v in losses.items()}
        bad = [k for k, v in values.items() if not np.isfinite(v)]
        if bad:
            raise MRSuperResError(f"training diverged: loss {', '.join(bad)} is not finite "
                                  "(lower --lr, or use --precision fp32)")
        return values

    def _backward(self, loss: torch.Tensor, optimizer) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            optimizer.step()

    def _save(self, iteration: int, wall: float) -> Path:
        path = checkpoints.save_checkpoint(self.run_dir, iteration, self._checkpoint_state(iteration, wall),
                                           keep=self.config.keep)
        self.log.write("checkpoint", iteration, path=str(path))
        return path

    def _loop(self, start_iter: int, stop: StopRequest) -> int:
        from .training_data import Prefetcher

        c = self.config
        t_start = time.perf_counter()
        self.iteration = start_iter
        bar = _Bar(c.iters, enabled=self.progress_bar)
        self.rng_state = self.rng.bit_generator.state     # after the last batch trained on
        batches = Prefetcher(self.pool, self.rng, c.batch, c.patch, c.scale, self.methods, c.hr_noise,
                             tuple(c.hr_noise_sigma))
        try:
            return self._iterate(start_iter, stop, batches, bar, t_start)
        finally:
            batches.close()

    def _iterate(self, start_iter: int, stop: StopRequest, batches, bar, t_start: float) -> int:
        c = self.config
        val_every = c.val_every or c.checkpoint_every
        window_t, window_i = t_start, start_iter
        losses = {}
        its = 0.0
        for it in range(start_iter + 1, c.iters + 1):
            lr_b, hr_b, noisy, self.rng_state = batches.next()
            losses = self._step(lr_b, hr_b, noisy)
            self.iteration = it
            now = time.perf_counter()
            if it % c.log_every == 0 or it == c.iters:
                its = (it - window_i) / max(now - window_t, 1e-9)
                window_t, window_i = now, it
                self.log.write("progress", it, losses=losses, lr=self.lr, its_per_sec=its,
                               eta_seconds=(c.iters - it) / its if its > 0 else None, iters=c.iters)
            bar.update(it, losses, its)
            if it % val_every == 0 and it != c.iters:
                self._validate(it)
            if stop.requested():
                bar.close()
                return self._finish(it, self.wall_before + time.perf_counter() - t_start, stopped=stop.reason)
            if it % c.checkpoint_every == 0 and it != c.iters:
                self._save(it, self.wall_before + time.perf_counter() - t_start)
        bar.close()
        self._validate(c.iters)
        return self._finish(c.iters, self.wall_before + time.perf_counter() - t_start, stopped=None)

    def _validate(self, it: int) -> None:
        result = validate(self.ema, self.val, self.device, self.precision, generator=self.generator)
        if result is not None:
            self.last_val = result
            self.log.write("validation", it, **result)

    def _finish(self, it: int, wall: float, stopped: str | None) -> int:
        ckpt = self._save(it, wall)
        model_path = self.export(it, wall, stopped)
        if stopped:
            self.log.write("stopped", it, reason=stopped, checkpoint=str(ckpt), model=str(model_path))
            return EXIT_STOPPED
        self.log.write("done", it, model=str(model_path), wall_seconds=wall)
        return EXIT_DONE

    def export(self, it: int, wall: float, stopped: str | None) -> Path:
        """RUN/model.safetensors (the EMA generator) and its card."""
        from .weights import save_model

        c = self.config
        model = copy.deepcopy(self.ema).to("cpu", memory_format=torch.contiguous_format).float()
        card = {
            "name": self.run_dir.resolve().name,
            "description": f"MRSuperRes {c.stage}-stage training run (EMA generator)",
            "stage": c.stage, "preset": c.preset if c.stage == "gan" else None,
            "loss_weights": self.weights if c.stage == "gan" else {"l1_weight": 1.0},     # psnr: L1 only
            "gan_loss": self.gan_kind if c.stage == "gan" else None,
            "perceptual_network": self.vgg_desc, "init": self.init_desc, "init_provenance": self.init_record,
            "init_discriminator": self.init_d_desc,
            "training_data": [dict(path=i.path, sha256=i.sha256, shape=list(i.shape)) for i in self.train_infos],
            "validation_data": ([dict(path=i.path, sha256=i.sha256, shape=list(i.shape)) for i in self.val_infos]
                                if self.split != "slab" else "last 20% of the training volume's slices along its "
                                                             "third axis, held out from training"),
            "degradations": self.methods, "hr_noise": c.hr_noise,
            "hr_noise_sigma": recorded_noise_sigma(c.hr_noise, c.hr_noise_sigma),
            "hr_noise_losses": noisy_target_losses(c.stage, c.hr_noise),
            "axis": c.axis, "patch": c.patch, "batch": c.batch,
            "iterations": it, "target_iterations": c.iters, "stopped_early": bool(stopped),
            "learning_rate": self.lr, "learning_rate_schedule": self.lr_schedule, "ema_decay": c.ema_decay,
            "seed": c.seed,
            "device": _device_name(self.device), "precision": self.precision,
            "wall_seconds": round(wall, 1),
            "metrics": ({"validation": self.last_val, "protocol": "bilinear x%d, up to 16 central crops <= 128 px, "
                         "SSIM/PSNR on [0,1]" % c.scale} if self.last_val else None),
        }
        path = self.run_dir / "model.safetensors"
        save_model(model, path, card)
        return path


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    import platform
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


class _Bar:
    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled = total, enabled

    def update(self, it: int, losses: dict, its: float) -> None:
        if not self.enabled:
            return
        filled = int(30 * it / self.total)
        loss = " ".join(f"{k} {v:.4f}" for k, v in list(losses.items())[:3])
        eta = f"{(self.total - it) / its:6.0f} s left" if its > 0 else ""
        sys.stderr.write(f"\rtrain [{'#' * filled}{'.' * (30 - filled)}] {it}/{self.total} {loss} {eta} ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def train(config: TrainConfig, progress_bar: bool | None = None) -> int:
    """Validate, then train; returns 0 (done) or 3 (stopped). Raises MRSuperResError on bad input."""
    trainer = Trainer(config, progress_bar)
    trainer.prepare()
    return trainer.run()
