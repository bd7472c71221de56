"""The one declaration of every training option, and everything derived from it.

Each `TrainConfig` field carries its default, help text, choices and limits. From that one
declaration come the `mrsuperres train` flags (help with defaults), the config file loader
(TOML or JSON), the checks, the Slicer panel's defaults and the Slicer logic's
`train(**options)`, so an option added here appears everywhere and nowhere else needs editing.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from ..errors import MRSuperResError
from ..options import CONSISTENCY_DEFAULT, CONSISTENCY_MODES, HR_NOISE_SIGMA, PRECISIONS, THICK_DEFAULT_MODEL

PRESETS = {
    # Rashid et al.: L1 + perceptual + GAN, each weight 1
    "paper": dict(l1_weight=1.0, perceptual_weight=1.0, gan_weight=1.0,
                  layers={"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}),
    # train_realesrgan_x4plus.yml
    "realesrgan": dict(l1_weight=1.0, perceptual_weight=1.0, gan_weight=0.1,
                       layers={"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}),
    # the two-stage ESRGAN thesis: L = L_percep + 5e-3 L_adv + 1e-2 L_content, ESRGAN's conv5_4 features, RaGAN
    "thesis": dict(l1_weight=0.01, perceptual_weight=1.0, gan_weight=0.005, layers={"conv5_4": 1.0},
                   gan_loss="ragan"),
}
STAGE_LR = {"psnr": 2e-4, "gan": 1e-4}
# options that may change between a run and its --resume
RESUME_MAY_CHANGE = {"iters", "device", "precision", "checkpoint_every", "log_every", "val_every", "resume",
                     "config", "keep", "lr"}     # a lower --lr on resume is how a fine-tune is finished


def option(default=None, help: str = "", *, factory=None, choices=None, minimum=None, shown=None,
           metavar=None, panel=None, aliases=()):
    """A TrainConfig field with what the flag, the checks and the panel need to know.

    `shown`: the default as the help text states it (when the literal default, None, means
    "decided later"; "" for no default); `panel`: True when the Slicer panel offers the option
    with this default, or the value the panel starts from instead."""
    meta = dict(help=help, choices=choices, minimum=minimum, shown=shown, metavar=metavar, panel=panel,
                aliases=tuple(aliases))
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    data: list = option(factory=list, shown="", metavar="VOLUME", help="training volumes (.nii, .nii.gz, .nrrd)")
    out: str = option("", shown="", help="run folder (created; must not hold another run unless --resume)")
    val: list = option(factory=list, metavar="VOLUME", shown="80/20 split by volume; one volume: its last 20%% "
                       "of slices along the third axis are held out", help="validation volumes")
    stage: str = option("psnr", choices=tuple(STAGE_LR), panel=True,
                        help="psnr: L1 only, lr 2e-4; gan: L1 + perceptual + adversarial, lr 1e-4")
    preset: str = option("realesrgan", choices=tuple(PRESETS), panel=True,
                         help="gan-stage loss weights L1/perceptual/GAN: paper 1/1/1 (Rashid et al.), realesrgan "
                              "1/1/0.1 with its VGG layer weights, thesis 0.01/1/0.005 with RaGAN")
    init: str = option("scratch", panel="realesrgan",
                       help="starting generator: scratch, realesrgan (RealESRGAN_x4plus made 1-channel), a "
                            "previous run folder, or any model name or file that --model accepts")
    init_d: str = option("scratch", help="starting discriminator: scratch, a BasicSR UNetDiscriminatorSN file, "
                                        "or a training checkpoint (.pt)")
    scale: int = option(4, choices=(1, 2, 4, 8), help="upscaling factor (1: a through-plane model for thick-slice "
                        "scans, trained with --degrade thick)")
    input_skip: bool = option(False, help="learn the correction to the bicubic upsampling of the input (x2-x8; "
                              "x1 always learns the correction to its input); with --init a model of another "
                              "scale the output layer starts at zero, so training starts from bicubic exactly")
    supersample: int = option(1, minimum=1, help="build the network for scale x this and box-average its output "
                              "(x2 with 2: the x4 network, every weight transferred from an x4 --init)")
    consistency: str = option(CONSISTENCY_DEFAULT, choices=CONSISTENCY_MODES,
                              help="the consistency step validation applies, so checkpoints are chosen as the model "
                                   "will run (auto: the --init model's card's, else anchor; exact for supersampled x2)")
    blocks: int | None = option(None, minimum=1, shown="23, or the init model's",
                                help="RRDB blocks; more than the --init model's grows that network, which then "
                                     "starts out computing exactly what it did")
    features: int | None = option(None, minimum=1, shown="64, or the init model's",
                                  help="features; more grows it, as --blocks")
    growth: int | None = option(None, minimum=1, shown="32, or the init model's",
                                help="dense-block growth channels; more grows it, as --blocks")
    d_features: int = option(64, minimum=1, help="discriminator features, as Real-ESRGAN's")
    iters: int = option(1000, minimum=1, panel=True, help="iterations to reach")
    batch: int = option(4, minimum=1, panel=True, help="patches per iteration")
    patch: int = option(128, minimum=1, panel=True,
                        help="HR patch size in pixels (a multiple of 8, and of 8 x scale for the gan stage)")
    degrade: str = option("bilinear", help="LR simulation: bilinear (the Rashid et al. protocol), bicubic, kspace, "
                          "mri (blur + slice profile + k-space truncation + Rician noise), or a comma-separated mix; "
                          "thick (with --scale 1): thick slices along one direction, interpolated back")
    slice_factors: list | str = option(factory=lambda: [2.0, 6.0], metavar="LO,HI",
                                       help="--degrade thick: slice spacing over the fine spacing, drawn in LO..HI")
    slice_thickness: list | str = option(factory=lambda: [0.6, 1.0], metavar="LO,HI",
                                         help="--degrade thick: slice thickness as a fraction of the slice spacing "
                                              "(below 1: gaps between slices), drawn in LO..HI")
    fine_tune_on: str | None = option(None, shown="", metavar="VOLUME", aliases=("--self",),
                                      help="self-supervised through-plane fine-tune on this thick-slice scan: "
                                           "trains on its own in-plane slices, degraded by its own slice spacing "
                                           f"and thickness, from {THICK_DEFAULT_MODEL} (sets --data, --scale 1, --degrade "
                                           "thick, the slice options, --axis and a CPU-sized --iters)")
    hr_noise: float = option(0.0, help="probability of Rician noise (sigma: --hr-noise-sigma) on the HR patch itself, "
                             "so the model keeps scan noise as interpolation does; in the gan stage those patches "
                             "train L1 only")
    hr_noise_sigma: list | str = option(factory=lambda: list(HR_NOISE_SIGMA), metavar="LO,HI",
                                        shown=",".join(f"{s:g}" for s in HR_NOISE_SIGMA),
                                        help="range of that noise's sigma, fractions of the [0, 1] intensity range "
                                             "(unused without --hr-noise)")
    axis: str = option("2", panel="all", help="slice axis for training patches: 0, 1, 2, or all (augmentation)")
    lr: float | None = option(None, shown="2e-4 psnr, 1e-4 gan", help="learning rate")
    ema_decay: float = option(0.999, help="EMA decay of the exported generator")
    gan_loss: str | None = option(None, choices=("vanilla", "ragan"), shown="the preset's; vanilla BCE otherwise",
                                  help="vanilla BCE (Real-ESRGAN's) or relativistic average")
    l1_weight: float | None = option(None, shown="the preset's", help="L1 loss weight")
    perceptual_weight: float | None = option(None, shown="the preset's", help="perceptual loss weight")
    gan_weight: float | None = option(None, shown="the preset's", help="adversarial loss weight")
    checkpoint_every: int = option(500, minimum=1, help="iterations between checkpoints")
    val_every: int | None = option(None, minimum=1, shown="with every checkpoint",
                                   help="iterations between validations")
    log_every: int = option(10, minimum=1, help="iterations between progress events")
    keep: int = option(3, minimum=1, help="checkpoints kept")
    device: str = option("auto", panel=True, help="auto (CUDA when present), cpu or cuda")
    precision: str = option("auto", choices=PRECISIONS,
                            help="auto: the precision measured fastest here for this architecture (bf16 only "
                                 "where it beats fp32; fp16 with a grad scaler on GPUs without bf16)")
    seed: int = option(0, help="random seed")
    resume: bool = option(False, help="continue the run in --out from its newest valid checkpoint")
    config: str | None = option(None, shown="", help="TOML or JSON file with the same options (e.g. iters = 2000); "
                                                    "flags override it")

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def _kind(f) -> str:
    """The option's value type from its annotation: int, float, str, list or bool."""
    return str(f.type).split("|")[0].strip()


def default_of(f):
    return f.default_factory() if f.default is MISSING else f.default


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def defaults() -> dict:
    return {f.name: default_of(f) for f in fields(TrainConfig)}


def _shown_default(f) -> str:
    shown = f.metadata["shown"]
    if shown is None:
        value = default_of(f)
        shown = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return f" (default: {shown})" if shown else ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `mrsuperres train` flags. Each defaults to None so that a config file can fill it."""
    for f in fields(TrainConfig):
        meta, kind = f.metadata, _kind(f)
        numbers = f": {', '.join(map(str, meta['choices']))}" if meta["choices"] and kind != "str" else ""
        text = meta["help"] + numbers + _shown_default(f)
        names = [flag(f.name), *meta["aliases"]]
        if kind == "bool":
            parser.add_argument(*names, action="store_true", default=None, help=text)
            continue
        extra = dict(type={"int": int, "float": float}.get(kind, str), metavar=meta["metavar"])
        if kind == "list" and f.name in ("data", "val"):      # the others are "lo,hi" ranges
            extra["nargs"] = "+"
        if meta["choices"] and kind == "str":     # numbers are checked by check_config, in one line
            extra["choices"] = meta["choices"]
        parser.add_argument(*names, help=text, **{k: v for k, v in extra.items() if v is not None})


def coerce(name: str, value):
    """A value for option `name` from text (a panel's parameter node, a TOML string) or as given."""
    f = next((f for f in fields(TrainConfig) if f.name == name), None)
    if f is None:
        raise MRSuperResError(f"unknown training option '{name}' (options: {', '.join(TrainConfig.option_names())})")
    if not isinstance(value, str) or value == "":
        return None if value == "" else value
    kind = _kind(f)
    try:
        if kind == "bool":
            return value.strip().lower() in ("1", "true", "yes", "on")
        if kind == "list":                    # volumes: one path; --hr-noise-sigma: "lo,hi", parsed by the checks
            return [value] if name in ("data", "val") else value
        return {"int": int, "float": float}.get(kind, str)(value)
    except ValueError:
        raise MRSuperResError(f"{flag(name)} must be a{'n integer' if kind == 'int' else ' number'}, "
                              f"not {value!r}") from None


def choices_of(name: str) -> tuple:
    """The declared choices of option `name` (empty when any value of its type may do)."""
    return next(f.metadata["choices"] or () for f in fields(TrainConfig) if f.name == name)


def panel_defaults() -> dict:
    """{option: value} for the options the Slicer panel offers, as the panel starts."""
    out = {}
    for f in fields(TrainConfig):
        panel = f.metadata["panel"]
        if panel is not None:
            out[f.name] = default_of(f) if panel is True else panel
    return out


def load_config_file(path: str) -> dict:
    """Options from a TOML (`iters = 2000`) or JSON (`{"iters": 2000}`) file; unknown keys refused."""
    try:
        if str(path).lower().endswith(".json"):
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
        else:
            try:
                import tomllib  # novermin  (Python 3.11+; Slicer 5.8 has 3.9, and its jobs use JSON)
            except ImportError:
                raise MRSuperResError(f"{path}: TOML config files need Python 3.11 or later; "
                                      "give the options as a .json file") from None
            with open(path, "rb") as f:
                raw = tomllib.load(f)
    except FileNotFoundError:
        raise MRSuperResError(f"config file not found: {path}") from None
    except (OSError, ValueError) as exc:      # TOMLDecodeError and JSONDecodeError are ValueErrors
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
    """Defaults <- config file (--config) <- explicit options (flags, or the Slicer logic's)."""
    unknown = sorted(set(cli_options) - set(TrainConfig.option_names()))
    if unknown:
        raise MRSuperResError(f"unknown training option(s) {', '.join(unknown)} "
                              f"(options: {', '.join(TrainConfig.option_names())})")
    options = {}
    if cli_options.get("config"):
        options.update(load_config_file(cli_options["config"]))
    options.update({k: v for k, v in cli_options.items() if v is not None and v != []})
    if options.get("fine_tune_on"):             # --self VOLUME: its own options, under explicit ones
        from .self_supervised import self_supervised_options
        options = {**self_supervised_options(options["fine_tune_on"], options), **options}
    config = TrainConfig(**{k: coerce(k, v) for k, v in options.items()})
    check_config(config)
    return config


def write_config_file(config: TrainConfig, path: str | Path) -> Path:
    """The options as a JSON config file a child `mrsuperres train --config FILE` runs from."""
    from ..files import atomic_write_bytes

    return atomic_write_bytes(path, (json.dumps(asdict(config), indent=2) + "\n").encode())


def check_config(c: TrainConfig) -> None:
    """Every option's declared choices and limits, then the rules that tie options together."""
    from .degradation import parse_degradations
    from .data import axes_for

    if not c.data:
        raise MRSuperResError("no training volumes given (--data)")
    if not c.out:
        raise MRSuperResError("no run folder given (--out)")
    for f in fields(TrainConfig):
        value, meta = getattr(c, f.name), f.metadata
        if value is None:
            continue
        if meta["choices"] and value not in meta["choices"]:
            raise MRSuperResError(f"{flag(f.name)} must be one of {', '.join(map(str, meta['choices']))}, "
                                  f"not {value!r}")
        if meta["minimum"] is not None and int(value) < meta["minimum"]:
            raise MRSuperResError(f"{flag(f.name)} must be at least {meta['minimum']}")
    if c.patch % (8 * c.scale if c.stage == "gan" else c.scale) or c.patch % 8:
        raise MRSuperResError(f"--patch {c.patch} must be a multiple of 8 and of 8 x scale for the GAN stage "
                              f"(the discriminator halves it three times)")
    if not 0 <= c.ema_decay < 1:
        raise MRSuperResError("--ema-decay must be in [0, 1)")
    if c.supersample != 1 and (c.scale == 1 or c.scale * c.supersample not in (2, 4, 8)):
        raise MRSuperResError(f"--supersample {c.supersample} needs an in-plane --scale whose product with it is 2, "
                              f"4 or 8 (got --scale {c.scale})")
    methods = parse_degradations(c.degrade)
    if (c.scale == 1) != ("thick" in methods) or (c.scale == 1 and methods != ["thick"]):
        raise MRSuperResError("--scale 1 trains a through-plane model and needs --degrade thick, which only it uses"
                              f" (got --scale {c.scale}, --degrade {c.degrade})")
    c.slice_factors = parse_range("--slice-factors", c.slice_factors, 1.0, 16.0, "slice spacing over fine spacing")
    c.slice_thickness = parse_range("--slice-thickness", c.slice_thickness, 0.05, 3.0, "fractions of the spacing")
    if not 0 <= c.hr_noise <= 1:
        raise MRSuperResError("--hr-noise is a probability: give a number in [0, 1]")
    c.hr_noise_sigma = parse_noise_sigma(c.hr_noise_sigma)
    axes_for(c.axis)


def check_options(options: dict) -> TrainConfig:
    """Check options as the Slicer logic receives them, before any volume is written or any
    child process starts (the volumes and the run folder are filled in later)."""
    return build_config({**options, "data": ["<volumes>"], "out": "<run folder>"})


def parse_noise_sigma(value) -> list[float]:
    """--hr-noise-sigma "lo,hi" (or a [lo, hi] list) -> [lo, hi] with 0 <= lo <= hi <= 0.5."""
    return parse_range("--hr-noise-sigma", value, 0.0, 0.5, "fractions of the [0, 1] range")


def parse_range(name: str, value, low: float, high: float, unit: str) -> list[float]:
    """A "lo,hi" option (or a [lo, hi] list) -> [lo, hi] with low <= lo <= hi <= high."""
    try:
        parts = [float(v) for v in (value.split(",") if isinstance(value, str) else value)]
    except (TypeError, ValueError):
        parts = []
    if len(parts) != 2 or not low <= parts[0] <= parts[1] <= high:
        raise MRSuperResError(f"{name} must be 'lo,hi' with {low:g} <= lo <= hi <= {high:g} ({unit}), not {value!r}")
    return parts


def resume_differences(saved: dict, config: TrainConfig) -> list[str]:
    """Options a --resume may not change but does (a run from before an option existed has
    that option's default)."""
    return [k for k, v in defaults().items()
            if k not in RESUME_MAY_CHANGE and saved.get(k, v) != getattr(config, k)]
