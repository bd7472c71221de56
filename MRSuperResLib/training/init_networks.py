"""Where a training run's networks start: from scratch, RealESRGAN, a shipped or cached model,
a previous run, or (discriminator) a BasicSR file or a training checkpoint."""
from __future__ import annotations

from pathlib import Path

import torch

from ..models import checkpoints
from ..models.cards import provenance
from ..errors import MRSuperResError
from ..models.grow import grow
from ..models.rrdbnet import RRDBNet

SIZE_FLAGS = (("blocks", "num_block"), ("features", "num_feat"), ("growth", "num_grow_ch"))


def resolve_init(config) -> tuple[RRDBNet, str, dict | None]:
    """The starting generator, a description of where it came from, and (for a trained model)
    the training record from its card, so a chain of fine-tunes stays traceable."""
    from ..models.catalog import REALESRGAN_MODEL, load_model

    if config.init == "scratch":
        torch.manual_seed(config.seed)
        model = RRDBNet(1, 1, scale=config.scale, num_feat=config.features or 64,
                        num_block=config.blocks or 23, num_grow_ch=config.growth or 32,
                        input_skip=config.scale == 1 or config.input_skip,   # learn the correction to the input
                        supersample=config.supersample)
        if "input_skip" in model.config:
            with torch.no_grad():                # and start close to the identity
                model.conv_last.weight.mul_(0.1)
        return model, "scratch (BasicSR initialisation)" + (", input skip" if "input_skip" in model.config
                                                            else ""), None
    spec = REALESRGAN_MODEL if config.init == "realesrgan" else config.init
    if Path(spec).is_dir():
        spec = str(Path(spec) / "model.safetensors")
    model, card = load_model(spec)
    transferred = ""
    if model.scale != config.scale:
        if 1 in (model.scale, config.scale):
            raise MRSuperResError(f"--init model '{card.get('name')}' is x{model.scale}, but --scale {config.scale} "
                                  "was asked (x1 through-plane models and in-plane models do not share weights)")
        whole = config.scale * config.supersample == model.scale      # the same layers: every weight taken
        grown = config.scale == 8 and model.scale == 4                  # one more upsampling stage
        transferred = ((f", every weight of the x{model.scale} network" if whole else
                        f", every weight of the x4 network and a third upsampling stage starting as the identity"
                        if grown else f", body transferred from x{model.scale}") +
                       (f", supersampled x{config.supersample}" if config.supersample > 1 else "") +
                       (" with a bicubic input skip" if config.input_skip else ""))
        model = transfer_to_scale(model, config.scale, config.input_skip, config.supersample)
    elif model.config.get("supersample", 1) != config.supersample:
        raise MRSuperResError(f"--supersample {config.supersample} differs from the --init model's "
                              f"{model.config.get('supersample', 1)}")
    elif config.input_skip and "input_skip" not in model.config:
        raise MRSuperResError("--input-skip starts from a model of another scale or from scratch (the --init "
                              "model has no input skip)")
    arch = model.config
    size = {key: getattr(config, flag) or arch[key] for flag, key in SIZE_FLAGS}
    for flag, key in SIZE_FLAGS:
        if size[key] < arch[key]:
            raise MRSuperResError(f"--{flag} {size[key]} is smaller than the --init model's {arch[key]} "
                                  "(a network can be grown from a trained one, not shrunk)")
    if any(size[key] != arch[key] for _, key in SIZE_FLAGS):
        model = grow(model, **size, seed=config.seed)
        transferred += (f", grown to {size['num_block']} blocks, {size['num_feat']} features, "
                        f"{size['num_grow_ch']} growth channels (the same function at the start)")
    return model, f"{card.get('name')} (sha256 {card.get('sha256') or 'n/a'}){transferred}", provenance(card)


def transfer_to_scale(source: RRDBNet, scale: int, input_skip: bool = False, supersample: int = 1) -> RRDBNet:
    """An in-plane RRDBNet at `scale` that starts from `source`'s weights (another in-plane scale).

    Every tensor whose shape matches is copied: the trunk, the upsampling and the output layers.
    conv_first differs where the pixel-unshuffle differs (x2 sees 2x2 sub-pixels as 4 channels);
    its weights are spread evenly over the sub-pixels, so at the start the x2 network is exactly
    the x4 one run on the 2x2 box average of its input. A third upsampling stage (x8) starts as
    the identity (each feature passed on at its centre tap), so the x8 network starts as the x4
    one with its features upsampled once more by nearest neighbour, instead of from noise.
    With `input_skip` the output layer starts at zero: the network
    then starts as bicubic upsampling exactly, and learns the correction with the x4 trunk's features.
    `supersample` k builds the layers for scale x k (rrdbnet): an x2 model supersampled 2 from an
    x4 one takes every weight as it is and starts as the x4 network, its output box-averaged 2x2.
    """
    from ..models.rrdbnet import init_weights, unshuffle_factor

    arch = {k: v for k, v in source.config.items() if k not in ("scale", "input_skip", "supersample")}
    target = RRDBNet(**arch, scale=scale, input_skip=input_skip, supersample=supersample)
    init_weights(target)
    state = target.state_dict()
    src = source.state_dict()
    for key, value in src.items():
        if key in state and state[key].shape == value.shape:
            state[key] = value.clone()
    ratio = unshuffle_factor(target.inner_scale) ** 2 / unshuffle_factor(source.inner_scale) ** 2
    if ratio >= 1 and ratio.is_integer():          # more sub-pixel channels: repeat, share the weight
        w = src["conv_first.weight"]
        state["conv_first.weight"] = w.repeat_interleave(int(ratio), dim=1) / ratio
        state["conv_first.bias"] = src["conv_first.bias"].clone()
    if "conv_up3.weight" in state and "conv_up3.weight" not in src:
        w = state["conv_up3.weight"]
        w.zero_()
        w[:, :, 1, 1] = torch.eye(w.shape[0], dtype=w.dtype)
        state["conv_up3.bias"].zero_()
    if input_skip:
        state["conv_last.weight"].zero_()
        state["conv_last.bias"].zero_()
    target.load_state_dict(state)
    return target


def resolve_init_d(config):
    from .discriminator import UNetDiscriminatorSN, discriminator_from_state
    from ..models.weights import read_state_dict

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

