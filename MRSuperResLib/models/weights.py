"""Generator weights: read any RRDBNet checkpoint safely, make it 1-channel, save with a card.

Accepted sources: .safetensors; .pth/.pt read with `torch.load(weights_only=True)` (bare state
dict, or wrapped in `params_ema`/`params`; BasicSR or old ESRGAN key names); an ncnn
`.param`/`.bin` pair. Scale and architecture are inferred from the tensor shapes, then the
state dict is loaded with a strict key and shape check. Arbitrary pickles are never executed.
"""
from __future__ import annotations

import hashlib
import os
import re
import struct
from pathlib import Path

import numpy as np
import torch

from .cards import imported_card, read_card, write_card
from ..errors import MRSuperResError
from ..files import atomic_write_bytes, sha256_of
from .rrdbnet import RRDBNet, unshuffle_factor


# ----------------------------------------------------------------------------- reading

def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read tensors from a weights file without executing code; BasicSR key names out."""
    path = Path(path)
    if not path.exists():
        raise MRSuperResError(f"model file not found: {path}")
    if path.is_dir():
        raise MRSuperResError(f"model path is a folder, not a weights file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        state = _read_safetensors(path)
    elif suffix in (".pth", ".pt", ".ckpt"):
        state = _read_pth(path)
    elif suffix in (".param", ".bin"):
        state = read_ncnn(path.with_suffix(".param"), path.with_suffix(".bin"))
    else:
        raise MRSuperResError(
            f"unsupported model file type '{path.suffix}': {path} "
            "(expected .safetensors, .pth, or an ncnn .param/.bin pair)")
    return rename_esrgan_keys(state)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise MRSuperResError(
            f"cannot read {path}: not a valid safetensors file, truncated or corrupt ({exc})") from None


def _read_pth(path: Path) -> dict[str, torch.Tensor]:
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = " ".join(str(exc).split())
        unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text) or re.search(r"GLOBAL ([\w.]+)", text)
        if unsafe or "weights_only" in text.lower() and "global" in text.lower():
            what = unsafe.group(1) if unsafe else "a non-tensor object"
            raise MRSuperResError(
                f"refused {path}: it is a pickle holding {what}, not only tensors, and loading it could run "
                "arbitrary code. Convert it to .safetensors where you trust it.") from None
        raise MRSuperResError(f"cannot read {path}: not a PyTorch checkpoint ({text[:120]})") from None
    except MemoryError:
        raise MRSuperResError(f"not enough memory to read {path}") from None
    except Exception as exc:  # truncated zip, random bytes, text: torch raises many types
        detail = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise MRSuperResError(f"cannot read {path}: truncated or not a PyTorch checkpoint ({detail})") from None
    if isinstance(obj, dict):
        for wrapper in ("params_ema", "params", "state_dict", "model"):
            if wrapper in obj and isinstance(obj[wrapper], dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise MRSuperResError(f"{path} does not hold a state dict of tensors")
    return obj


_ESRGAN_RENAMES = [
    # ESRGAN's RRDBNet_arch.py
    (re.compile(r"^RRDB_trunk\.(\d+)\.RDB(\d)\."), r"body.\1.rdb\2."),
    (re.compile(r"^trunk_conv\."), "conv_body."),
    (re.compile(r"^upconv(\d)\."), r"conv_up\1."),
    (re.compile(r"^HRconv\."), "conv_hr."),
    # the original ESRGAN release (architecture.py: model.0 ... model.10, sub-blocks)
    (re.compile(r"^model\.0\."), "conv_first."),
    (re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\."), r"body.\1.rdb\2.conv\3."),
    (re.compile(r"^model\.1\.sub\.\d+\.(weight|bias)$"), r"conv_body.\1"),
    (re.compile(r"^model\.3\."), "conv_up1."),
    (re.compile(r"^model\.6\."), "conv_up2."),
    (re.compile(r"^model\.8\."), "conv_hr."),
    (re.compile(r"^model\.10\."), "conv_last."),
]
_PREFIXES = ("module.", "generator.", "netG.", "net_g.", "params_ema.", "params.")


def rename_esrgan_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BasicSR names from old ESRGAN ones (RRDB_trunk/trunk_conv/upconvN/HRconv, or the first
    release's model.N.sub...), with a common wrapper prefix (module., generator., ...) removed."""
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    out = {}
    for key, value in state.items():
        for pattern, repl in _ESRGAN_RENAMES:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


# ----------------------------------------------------------------------------- ncnn

_NCNN_FP16_TAG = 0x01306B47
_NCNN_FP32_TAG = 0
_NCNN_LAYERS_WITHOUT_WEIGHTS = {"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp",
                                "ReLU", "PixelShuffle", "Reshape", "Permute", "Noop"}


def _ncnn_convs(param_path: Path) -> tuple[list[dict], int]:
    """The Convolution layers of an ncnn .param file, in order, and the count of Interp layers."""
    try:
        lines = param_path.read_text().split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise MRSuperResError(f"cannot read ncnn param file {param_path}: {exc}") from None
    if not lines or lines[0].strip() != "7767517":
        raise MRSuperResError(f"{param_path} is not an ncnn .param file (bad magic number)")
    try:
        return _parse_ncnn_layers(lines, param_path)
    except (ValueError, IndexError) as exc:
        raise MRSuperResError(f"{param_path}: malformed ncnn .param file ({exc})") from None


def _parse_ncnn_layers(lines: list[str], param_path: Path) -> tuple[list[dict], int]:
    convs, n_interp = [], 0
    for line in lines[2:]:
        fields = line.split()
        if not fields:
            continue
        kind = fields[0]
        if kind == "Interp":
            n_interp += 1
        if kind == "Convolution":
            n_in, n_out = int(fields[2]), int(fields[3])
            params = {}
            for item in fields[4 + n_in + n_out:]:
                key, _, value = item.partition("=")
                params[int(key)] = value
            k_w = int(params.get(1, 0))
            k_h = int(params.get(11, k_w))
            convs.append(dict(name=fields[1], out=int(params.get(0, 0)), kh=k_h, kw=k_w,
                              bias=int(params.get(5, 0)), size=int(params.get(6, 0)),
                              groups=int(params.get(7, 1))))
        elif kind not in _NCNN_LAYERS_WITHOUT_WEIGHTS:
            raise MRSuperResError(f"{param_path}: layer type '{kind}' is not part of an RRDBNet")
    return convs, n_interp


def read_ncnn(param_path: Path, bin_path: Path) -> dict[str, torch.Tensor]:
    """Convert an ncnn export of RRDBNet (convs in graph order) to a BasicSR state dict."""
    for p in (param_path, bin_path):
        if not p.exists():
            raise MRSuperResError(f"ncnn model needs both .param and .bin; missing {p}")
    convs, n_interp = _ncnn_convs(param_path)
    n_up = n_interp
    n_block, rest = divmod(len(convs) - 4 - n_up, 15)
    if n_up not in (2, 3) or rest or n_block < 1:
        raise MRSuperResError(
            f"{param_path}: {len(convs)} convolutions and {n_interp} upsampling layers do not form an RRDBNet")
    keys = ["conv_first"]
    keys += [f"body.{b}.rdb{r}.conv{c}" for b in range(n_block) for r in (1, 2, 3) for c in range(1, 6)]
    keys += ["conv_body"] + [f"conv_up{i}" for i in range(1, n_up + 1)] + ["conv_hr", "conv_last"]
    blob = bin_path.read_bytes()
    pos, state = 0, {}
    for key, conv in zip(keys, convs):
        if conv["groups"] != 1 or conv["out"] <= 0 or conv["size"] <= 0:
            raise MRSuperResError(f"{param_path}: layer {conv['name']} is not a plain convolution")
        if pos + 4 > len(blob):
            raise MRSuperResError(f"{bin_path} is truncated (ends inside layer {conv['name']})")
        (tag,) = struct.unpack_from("<I", blob, pos)
        pos += 4
        if tag == _NCNN_FP16_TAG:
            dtype, width = np.float16, 2
        elif tag == _NCNN_FP32_TAG:
            dtype, width = np.float32, 4
        else:
            raise MRSuperResError(f"{bin_path}: layer {conv['name']} has unsupported storage tag {tag:#x}")
        n_w = conv["size"]
        n_b = conv["out"] if conv["bias"] else 0
        if pos + n_w * width + 4 * n_b > len(blob):
            raise MRSuperResError(f"{bin_path} is truncated (ends inside layer {conv['name']})")
        w = np.frombuffer(blob, dtype=dtype, count=n_w, offset=pos).astype(np.float32)
        pos += n_w * width
        n_in = n_w // (conv["out"] * conv["kh"] * conv["kw"])
        state[f"{key}.weight"] = torch.from_numpy(w.reshape(conv["out"], n_in, conv["kh"], conv["kw"]).copy())
        if n_b:
            state[f"{key}.bias"] = torch.from_numpy(np.frombuffer(blob, np.float32, n_b, pos).copy())
            pos += 4 * n_b
    if pos != len(blob):
        raise MRSuperResError(f"{bin_path}: {len(blob) - pos} bytes left over; .param and .bin do not match")
    return state


# ----------------------------------------------------------------------------- architecture

def infer_architecture(state: dict[str, torch.Tensor]) -> dict:
    """RRDBNet constructor arguments read off the tensor shapes (raises if it is no RRDBNet)."""
    try:
        first = state["conv_first.weight"]
        last = state["conv_last.weight"]
        grow_w = state["body.0.rdb1.conv1.weight"]
    except KeyError as exc:
        raise MRSuperResError(f"not an RRDBNet state dict (BasicSR or ESRGAN key names): no tensor named {exc}") from None
    if any(t.ndim != 4 for t in (first, last, grow_w)):
        raise MRSuperResError("not an RRDBNet state dict: its convolution weights are not 4-dimensional")
    grow = grow_w.shape[0]
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.", k))}
    n_up = sum(1 for k in state if re.fullmatch(r"conv_up\d\.weight", k))
    out_ch = last.shape[0]
    ratio, rem = divmod(first.shape[1], out_ch)
    unshuffle = {1: 1, 4: 2, 16: 4}.get(ratio) if rem == 0 else None
    if unshuffle is None or n_up not in (2, 3) or (n_up == 3 and unshuffle != 1):
        raise MRSuperResError(
            f"cannot infer the scale: conv_first takes {first.shape[1]} channels, conv_last gives "
            f"{out_ch}, {n_up} upsampling convs")
    scale = 8 if n_up == 3 else 4 // unshuffle
    assert unshuffle_factor(scale) == unshuffle
    arch = dict(num_in_ch=first.shape[1] // (unshuffle * unshuffle), num_out_ch=out_ch, scale=scale,
                num_feat=first.shape[0], num_block=max(blocks) + 1 if blocks else 0, num_grow_ch=grow)
    if "input_skip" in state:                # a through-plane network that adds its input (rrdbnet)
        arch["input_skip"] = True
    if "supersample" in state:               # built for scale x k, its output box-averaged k x k (rrdbnet)
        k = int(state["supersample"].item())
        if k < 2 or scale % k or scale // k == 1:           # x1 is through-plane: nothing to supersample
            raise MRSuperResError(f"a supersample factor of {k} does not fit layers built for x{scale}")
        arch.update(scale=scale // k, supersample=k)
    return arch


def to_single_channel(state: dict[str, torch.Tensor], arch: dict) -> dict[str, torch.Tensor]:
    """3-channel RGB weights -> 1-channel: sum conv_first over colours, mean conv_last outputs.

    With gray input (R = G = B) summing the colour inputs is exact; Real-ESRGAN's three outputs
    agree closely on gray input, so their mean is the gray output.
    """
    state = dict(state)
    c_in, c_out = arch["num_in_ch"], arch["num_out_ch"]
    if c_in == 3:
        w = state["conv_first.weight"]
        f2 = w.shape[1] // 3  # pixel-unshuffle puts each colour's f*f sub-images together
        state["conv_first.weight"] = w.reshape(w.shape[0], 3, f2, *w.shape[2:]).sum(1)
    elif c_in != 1:
        raise MRSuperResError(f"a model with {c_in} input channels cannot be made 1-channel")
    if c_out == 3:
        state["conv_last.weight"] = state["conv_last.weight"].mean(0, keepdim=True)
        state["conv_last.bias"] = state["conv_last.bias"].mean(0, keepdim=True)
    elif c_out != 1:
        raise MRSuperResError(f"a model with {c_out} output channels cannot be made 1-channel")
    return state


def check_finite(state: dict[str, torch.Tensor], source: str = "") -> None:
    """Refuse weights holding NaN or inf, naming the tensors: such a network gives NaN everywhere,
    so every path that builds one (import, enhance, evaluate, --init) stops here, writing nothing."""
    bad = [k for k, v in state.items() if not bool(torch.isfinite(v).all())]
    if bad:
        names = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        raise MRSuperResError(f"{source or 'the weights'}: {len(bad)} of {len(state)} weight tensors "
                              f"{'holds' if len(bad) == 1 else 'hold'} NaN or infinite values ({names}); "
                              "refusing broken weights")


def build_generator(state: dict[str, torch.Tensor], source: str = "") -> RRDBNet:
    """A 1-channel RRDBNet holding `state` after a finiteness, key and shape check."""
    arch = infer_architecture(state)
    check_finite(state, source)
    state = {k: v.float() for k, v in to_single_channel(state, arch).items()}
    model = RRDBNet(**{**arch, "num_in_ch": 1, "num_out_ch": 1})
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise MRSuperResError(f"weights {source} do not fit an RRDBNet: {detail}") from None
    return model.eval()


# ----------------------------------------------------------------------------- files (cards: see cards.py)

def save_model(model: RRDBNet, path: str | os.PathLike, card: dict) -> dict:
    """Write `path` (.safetensors, fp32 or as stored) and its JSON card; returns the card."""
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise MRSuperResError(f"model output must end in .safetensors: {path}")
    if not path.parent.is_dir():
        raise MRSuperResError(f"output folder does not exist: {path.parent}")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", "architecture": "RRDBNet", "scale": str(model.scale)}
    blob = save(state, metadata=metadata)
    full = {"name": path.stem, **card, "scale": model.scale,
            "architecture": {"type": "RRDBNet", **model.config},
            "parameters": sum(v.numel() for v in state.values()),
            "sha256": hashlib.sha256(blob).hexdigest(), "file": path.name}
    for key in ("training_data", "iterations", "metrics"):
        full.setdefault(key, None)
    try:
        atomic_write_bytes(path, blob)
        write_card(path, full)
    except OSError as exc:
        raise MRSuperResError(f"cannot write {path}: {exc.strerror or exc}") from None
    return full


def load_generator(path: str | os.PathLike, verify_card: bool = True) -> tuple[RRDBNet, dict]:
    """Load a weights file of any accepted kind as a 1-channel RRDBNet, with its card (if any)."""
    path = Path(path)
    card = read_card(path) if path.suffix == ".safetensors" else None
    if card and verify_card and card.get("sha256"):
        actual = sha256_of(path)
        if actual != card["sha256"]:
            raise MRSuperResError(
                f"{path} does not match its model card (sha256 {actual[:12]}... != {card['sha256'][:12]}...): "
                "the file is corrupt or was replaced")
    model = build_generator(read_state_dict(path), source=str(path))
    if card is None:
        card = {"name": path.stem, "scale": model.scale, "architecture": {"type": "RRDBNet", **model.config},
                "source": str(path), "sha256": sha256_of(path)}
    model.card = card               # so every output made with it can name it (cards.model_provenance)
    return model, card


def import_model(source: str | os.PathLike, dest: str | os.PathLike, name: str) -> dict:
    """Convert weights of any accepted kind into `dest` (.safetensors) as model `name`; its card
    records the source file and its sha256. Returns the saved card. Weights that are not finite
    are refused on loading (check_finite), so nothing is written for them."""
    model, card = load_generator(Path(source))
    return save_model(model, dest, imported_card(card, name, source))
