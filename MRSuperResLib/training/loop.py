"""`mrsuperres train`: PSNR- and GAN-stage training of the 1-channel generator, resumable.

Stages (Real-ESRGAN / the two-stage ESRGAN thesis): `psnr` = L1 only, Adam lr 2e-4; `gan` = L1 + perceptual
(VGG before ReLU) + adversarial against a 1-channel UNetDiscriminatorSN, lr 1e-4. Adam betas
(0.9, 0.99) for both networks, EMA of the generator (decay 0.999); the exported model is the
EMA. Targets are not unsharp-masked (that biases fidelity metrics against the ground truth).

GAN loss default: `vanilla` (BCE on the per-pixel logits), as Real-ESRGAN trains its U-Net
discriminator and as the pretrained one that Aghelan & Rouhani fine-tune was trained; a relativistic
average over per-pixel logits is not what ESRGAN's RaGAN was designed for (`--gan-loss ragan`: the
two-stage ESRGAN thesis's).

One run: every input validated (nothing written before) -> event `start` or `resumed` -> iterations,
`progress` / `validation` / `checkpoint` events -> on the last iteration, a STOP file or
SIGTERM/SIGINT: a checkpoint, `RUN/model.safetensors` + card, and `done` or `stopped`.
"""
from __future__ import annotations

import copy
import json
import os
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..models import checkpoints
from ..pipeline import consistency
from ..engine.calibration import choose
from ..engine.devices import autocast, device_name, resolve_precision, select_device
from .distributed import NoLog, setup
from ..errors import EXIT_DONE, EXIT_STOPPED, MRSuperResError
from ..events import EventLog
from ..parent_watch import watch_parent
from .stop import StopRequest
from ..progress import Progress
from ..models.rrdbnet import RRDBNet
from .config import PRESETS, STAGE_LR, TrainConfig, check_config, resume_differences
from .init_networks import resolve_init, resolve_init_d


# ----------------------------------------------------------------------------- pieces

def clean_targets(noisy: np.ndarray, device) -> torch.Tensor | None:
    """Indices of a batch's samples without `--hr-noise` on their target (None: all of them)."""
    return torch.from_numpy(np.flatnonzero(~noisy)).to(device) if noisy.any() else None


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


def validate(ema: RRDBNet, val, device, precision, generator: RRDBNet | None = None, step: str = "auto") -> dict | None:
    """Mean SSIM/PSNR/VIF of the EMA ("model"), the raw generator if given, and bicubic: per
    validation volume under "volumes", and at the top level the mean over volumes (each subject
    counts once, however many slices it has). VIF is what a GAN checkpoint is picked by: the
    perceptual and adversarial losses trade SSIM/PSNR for texture, and VIF says whether that
    texture still carries the reference's information."""
    if not val:
        return None
    per_volume = {name: _validate_one(ema, lr, hr, device, precision, generator, step) for name, lr, hr in val}
    means = {method: {k: float(np.mean([v[method][k] for v in per_volume.values()])) for k in ("ssim", "psnr", "vif")}
             for method in next(iter(per_volume.values()))}
    return {**means, "volumes": per_volume}


def _validate_one(ema: RRDBNet, lr: np.ndarray, hr: np.ndarray, device, precision, generator, step) -> dict:
    from ..engine.batches import run_slices
    from ..engine.calibration import make_runner
    from ..evaluation.metrics import score_slices
    from ..scans.resample import upsample

    prec = "fp32" if precision == "fp16" else precision
    # torch: the weights change between validations, OpenVINO would convert the network each time
    mode = consistency.for_model(step, ema) if ema.scale != 1 else "none"   # as inference runs (never across slices)
    hold = consistency.hold(mode)
    preds = {"model": run_slices(make_runner(ema, device=device, precision=prec, engine="torch"), lr, hold=hold)}
    if generator is not None:
        was_training = generator.training
        preds["generator"] = run_slices(make_runner(generator.eval(), device=device, precision=prec, engine="torch"),
                                        lr, hold=hold)
        generator.train(was_training)
    # the baseline: bicubic upsampling, or at x1 the input itself (cubic interpolation across slices)
    preds["bicubic"] = lr if ema.scale == 1 else np.clip(upsample(lr, ema.scale, "bicubic"), 0, 1)
    _, summary = score_slices(hr, preds)                   # the same scoring as `evaluate`
    return {name: {k: summary[name][k]["mean"] for k in ("ssim", "psnr", "vif")} for name in preds}


# ----------------------------------------------------------------------------- the run

class Trainer:
    """Holds everything a run needs; `prepare` validates and loads, `run` trains."""

    def __init__(self, config: TrainConfig, progress_bar: bool | None = None):
        self.config = config
        self.run_dir = Path(config.out)
        self.progress_bar = progress_bar is not False     # None: a bar on a terminal, log lines elsewhere
        self.deferred_warnings: list[str] = []

    # -- validation of inputs: nothing is written here
    def prepare(self) -> None:
        from .degradation import parse_degradations
        from .data import load_pools, validation_set

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
            diff = resume_differences(self.resume_state["config"], c)
            if diff:
                raise MRSuperResError(f"--resume needs the same options as the run; these differ: {', '.join(diff)}")
            if self.resume_state["iter"] >= c.iters:
                raise MRSuperResError(f"the run already reached {self.resume_state['iter']} iterations; "
                                      f"raise --iters to go on")
        elif has_run:
            raise MRSuperResError(f"{run} already holds a training run: add --resume to continue it, "
                                  "or choose another --out")
        self.world = setup(c.device, c.batch)                   # one process, or torchrun's ranks
        self.device = select_device(c.device)
        if self.world.size > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", self.world.local_rank)
        resolve_precision(c.precision, self.device)             # a bad --precision fails before any loading
        self.methods = parse_degradations(c.degrade)
        self.pool, val_groups, self.split, self.train_infos, self.val_infos = load_pools(
            c.data, c.val, c.axis, c.patch)
        self.thick = (tuple(c.slice_factors), tuple(c.slice_thickness)) if c.scale == 1 else None
        self.val = validation_set(val_groups, c.scale, thick=self.thick)
        self.generator, self.init_desc, self.init_record = resolve_init(c)
        # the precision inference measured fastest for this architecture here (a bf16 step is no
        # faster where bf16 convolutions are not), or the one asked for
        self.precision_choice = self.world.from_main(     # measured once, by rank 0: every rank runs the same
            choose(self.generator, self.device, c.precision, engine="torch",
                   notify=lambda text: print(f"mrsuperres: {text}", file=sys.stderr)) if self.world.main else None)
        self.precision = self.precision_choice.precision
        self.discriminator, self.init_d_desc = resolve_init_d(c)
        preset = PRESETS[c.preset]
        self.weights = {k: (getattr(c, k) if getattr(c, k) is not None else preset[k])
                        for k in ("l1_weight", "perceptual_weight", "gan_weight")}
        self.gan_kind = c.gan_loss or preset.get("gan_loss", "vanilla")
        self.vgg, self.vgg_layers, self.vgg_desc = None, {}, None
        if c.stage == "gan" and self.weights["perceptual_weight"] > 0:
            from .vgg import load_vgg
            self.vgg, self.vgg_layers, self.vgg_desc = load_vgg(preset["layers"])
        self.world.barrier()                  # every rank checked the run folder before rank 0 writes to it

    def _defer_warning(self, message: str) -> None:
        """Checkpoint warnings found while validating; logged once the run has started."""
        self.deferred_warnings.append(message)

    # -- the loop
    def run(self) -> int:
        c = self.config
        run = self.run_dir
        main = self.world.main
        if main:
            run.mkdir(parents=True, exist_ok=True)
            checkpoints.remove_partials(run)
        self.log = EventLog(run / "events.jsonl") if main else NoLog()
        stop = StopRequest(run)
        if main:
            stop.stop_file.unlink(missing_ok=True)     # a STOP left by a stopped run must not stop its resume
        self.world.barrier()
        stop.install()
        watch_parent(stop.parent_gone)             # started from Slicer: Slicer gone -> checkpoint, then stop
        start_iter = 0
        try:
            self._build_training_state()
            if self.resume_state is not None:
                start_iter = self._restore(self.resume_state)
                for message in self.deferred_warnings:
                    self.log.write("warning", start_iter, message=message)
                    if main:                      # the user hears it too, not only the event log
                        print(f"mrsuperres: warning: {message}", file=sys.stderr, flush=True)
                self.log.write("resumed", start_iter, checkpoint=str(self.resume_path), **self._describe())
            else:
                if main:
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
            self.world.close()

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
        self.g_train = self.world.wrap(self.generator, self.device)       # DDP on several ranks
        self.d_train = self.world.wrap(self.discriminator, self.device)
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
                    precision_why=self.precision_choice.why,
                    parameters=sum(p.numel() for p in self.generator.parameters()),
                    architecture=self.generator.config, train_slices=len(self.pool),
                    val_slices=0 if self.val is None else sum(len(hr) for _, _, hr in self.val), split=self.split,
                    init=self.init_desc, init_d=self.init_d_desc, loss_weights=self.weights,
                    gan_loss=self.gan_kind if self.config.stage == "gan" else None, vgg=self.vgg_desc,
                    lr=self.lr, lr_schedule=self.lr_schedule, world_size=self.world.size)

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
        (when weighted) and `gan_g` (scripts/maintainers/loss_gradients.py measures the same ones).

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
            sr = self.g_train(lr_t)
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
                    if self.world.size > 1:      # one DDP forward per backward: real and fake as one batch
                        both = self.d_train(torch.cat([real, fake]))
                        real_logits, fake_logits = both[:len(real)], both[len(real):]
                    else:
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

    def _save(self, iteration: int, wall: float) -> Path | None:
        if not self.world.main:
            return None
        path = checkpoints.save_checkpoint(self.run_dir, iteration, self._checkpoint_state(iteration, wall),
                                           keep=self.config.keep)
        self.log.write("checkpoint", iteration, path=str(path))
        return path

    def _loop(self, start_iter: int, stop: StopRequest) -> int:
        from .data import Prefetcher

        c = self.config
        t_start = time.perf_counter()
        self.iteration = start_iter
        bar = Progress("train", c.iters, "it", initial=start_iter, enabled=self.progress_bar and self.world.main)
        self.rng_state = self.rng.bit_generator.state     # after the last batch trained on
        batches = Prefetcher(self.pool, self.rng, c.batch, c.patch, c.scale, self.methods, c.hr_noise,
                             tuple(c.hr_noise_sigma), self.thick)
        try:
            return self._iterate(start_iter, stop, batches, bar, t_start)
        finally:
            batches.close()

    def _iterate(self, start_iter: int, stop: StopRequest, batches, bar, t_start: float) -> int:
        c = self.config
        val_every = c.val_every or c.checkpoint_every
        window_t, window_i = t_start, start_iter
        losses = {}
        for it in range(start_iter + 1, c.iters + 1):
            lr_b, hr_b, noisy, self.rng_state = batches.next()
            part = self.world.part
            losses = self._step(part(lr_b), part(hr_b), part(noisy))
            self.iteration = it
            now = time.perf_counter()
            if it % c.log_every == 0 or it == c.iters:
                its = (it - window_i) / max(now - window_t, 1e-9)
                window_t, window_i = now, it
                self.log.write("progress", it, losses=losses, lr=self.lr, its_per_sec=its,
                               eta_seconds=(c.iters - it) / its if its > 0 else None, iters=c.iters)
            bar.update(it, **dict(list(losses.items())[:3]))
            if it % val_every == 0 and it != c.iters:
                self._validate(it)
            if self.world.any(stop.requested()):
                bar.close()
                return self._finish(it, self.wall_before + time.perf_counter() - t_start, stopped=stop.reason)
            if it % c.checkpoint_every == 0 and it != c.iters:
                self._save(it, self.wall_before + time.perf_counter() - t_start)
        bar.close()
        self._validate(c.iters)
        return self._finish(c.iters, self.wall_before + time.perf_counter() - t_start, stopped=None)

    def _validate(self, it: int) -> None:
        if not self.world.main:
            return
        result = validate(self.ema, self.val, self.device, self.precision, self.generator, self.config.consistency)
        if result is not None:
            self.last_val = result
            self.log.write("validation", it, **result)

    def _finish(self, it: int, wall: float, stopped: str | None) -> int:
        ckpt = self._save(it, wall)
        model_path = self.export(it, wall, stopped) if self.world.main else None
        if stopped:
            self.log.write("stopped", it, reason=stopped, checkpoint=str(ckpt), model=str(model_path))
            return EXIT_STOPPED
        self.log.write("done", it, model=str(model_path), wall_seconds=wall)
        return EXIT_DONE

    def export(self, it: int, wall: float, stopped: str | None) -> Path:
        """RUN/model.safetensors (the EMA generator) and its card."""
        from ..models.cards import training_card
        from ..models.weights import save_model

        c = self.config
        model = copy.deepcopy(self.ema).to("cpu", memory_format=torch.contiguous_format).float()
        card = training_card(
            name=self.run_dir.resolve().name, stage=c.stage, preset=c.preset, loss_weights=self.weights,
            gan_loss=self.gan_kind, perceptual_network=self.vgg_desc, init=self.init_desc,
            init_provenance=self.init_record, init_discriminator=self.init_d_desc, training_volumes=self.train_infos,
            validation_volumes=self.val_infos, split=self.split, degradations=self.methods, hr_noise=c.hr_noise,
            hr_noise_sigma=c.hr_noise_sigma, axis=c.axis, patch=c.patch, batch=c.batch, iterations=it,
            target_iterations=c.iters, stopped=stopped, learning_rate=self.lr, learning_rate_schedule=self.lr_schedule,
            ema_decay=c.ema_decay, seed=c.seed, device=device_name(self.device), precision=self.precision,
            wall_seconds=wall, validation=self.last_val, scale=c.scale, world_size=self.world.size,
            slice_profile=None if self.thick is None else {
                "profiles": "gaussian or rect, FWHM = thickness", "factors": list(c.slice_factors),
                "thickness_over_spacing": list(c.slice_thickness)})
        path = self.run_dir / "model.safetensors"
        save_model(model, path, card)
        return path


def train(config: TrainConfig, progress_bar: bool | None = None) -> int:
    """Validate, then train; returns 0 (done) or 3 (stopped). Raises MRSuperResError on bad input."""
    trainer = Trainer(config, progress_bar)
    trainer.prepare()
    return trainer.run()
