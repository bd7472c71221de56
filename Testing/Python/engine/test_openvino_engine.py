"""The optional OpenVINO engine: the same outputs as torch fp32 through the same slice engine
(batches, tiles, anchoring), converted once per model and cached, offered to `auto` only where
installed, and refused with one line where it cannot run."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import tiny_model

from MRSuperResLib.engine import calibration, openvino as openvino_engine
from MRSuperResLib.errors import MRSuperResError
from MRSuperResLib.engine.limits import ACCURACY_DB
from MRSuperResLib.engine.calibration import make_runner
from MRSuperResLib.pipeline.enhance import super_resolve_slices
from MRSuperResLib.models.weights import load_generator, save_model

pytest.importorskip("openvino")          # installed with the test extras; optional for users

CPU = torch.device("cpu")


def psnr(a, b) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - b) ** 2))
    return float("inf") if mse == 0 else -10 * np.log10(mse)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MRSUPERRES_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MRSUPERRES_ENGINES", raising=False)
    return tmp_path / "home"


@pytest.fixture
def small(tmp_path):
    """A real small RRDBNet loaded from a file, so it has a card and a sha256."""
    path = tmp_path / "small.safetensors"
    save_model(tiny_model(4, blocks=2, feat=32, grow=16), path, {"name": "small"})
    return load_generator(path)[0]


@pytest.mark.slow
def test_openvino_matches_torch_fp32_through_batches_tiles_and_anchoring(home, small, sample_volume):
    data, _ = sample_volume
    lr = np.stack([data[20:76, 30:90, k] for k in (10, 24)]) / data.max()
    lr = lr.astype(np.float32)[:, :53, :57]                     # odd sizes: padding to the multiple
    torch_out = super_resolve_slices(small, lr, device="cpu", precision="fp32", engine="torch")
    notes = []
    engine = make_runner(small, device="cpu", precision="fp32", engine="openvino", notify=notes.append)
    assert engine.engine == "openvino" and any("converting" in n for n in notes)
    for kwargs in ({}, {"batch_size": 1}, {"tile": 24}):
        out = super_resolve_slices(engine, lr, **kwargs)
        assert out.shape == torch_out.shape and psnr(out, torch_out) >= ACCURACY_DB, kwargs
    raw = super_resolve_slices(engine, lr, consistency="none")
    assert psnr(raw, super_resolve_slices(small, lr, device="cpu", precision="fp32", engine="torch",
                                          consistency="none")) >= ACCURACY_DB


@pytest.mark.slow
def test_the_converted_network_is_cached_by_sha256_and_a_damaged_cache_is_converted_again(home, small):
    make_runner(small, device="cpu", precision="fp32", engine="openvino", notify=lambda t: None)
    xml = openvino_engine.ir_path(small)
    assert xml.is_relative_to(home) and xml.exists() and xml.with_suffix(".bin").exists()
    assert small.card["sha256"][:24] in xml.name
    notes = []
    make_runner(small, device="cpu", precision="fp32", engine="openvino", notify=notes.append)
    assert not any("converting" in n for n in notes)            # read from the cache
    xml.write_text("<damaged")
    make_runner(small, device="cpu", precision="fp32", engine="openvino", notify=notes.append)
    assert any("converting" in n for n in notes)
    x = np.random.default_rng(0).random((1, 16, 16)).astype(np.float32)
    engine = make_runner(small, device="cpu", precision="fp32", engine="openvino")
    assert engine.forward(x).shape == (1, 64, 64)


@pytest.mark.slow
def test_auto_offers_openvino_where_installed_and_records_the_engine(home, small, monkeypatch):
    assert "openvino-fp32" in calibration.paths(CPU)
    monkeypatch.setenv("MRSUPERRES_ENGINES", "torch")
    assert "openvino-fp32" not in calibration.paths(CPU)
    monkeypatch.delenv("MRSUPERRES_ENGINES")
    choice = calibration.choose(small, CPU, refresh=True)
    assert {"fp32", "openvino-fp32"} <= set(choice.measured)
    assert choice.measured["openvino-fp32"]["psnr_vs_fp32"] >= ACCURACY_DB
    best = min(choice.measured, key=lambda k: choice.measured[k]["seconds_per_slice"])
    assert (choice.engine, choice.precision) == calibration.split(best)
    assert calibration.choose(small, CPU).cached


@pytest.mark.slow
def test_without_the_package_nothing_changes(home, small, monkeypatch):
    monkeypatch.setattr(openvino_engine, "available", lambda: False)
    assert all(not p.startswith("openvino") for p in calibration.paths(CPU))
    assert make_runner(small, device="cpu").engine == "torch"
    with pytest.raises(MRSuperResError, match=r"not installed: pip install 'mrsuperres\[openvino\]'"):
        make_runner(small, device="cpu", engine="openvino")


def test_openvino_refuses_what_it_cannot_run(home, small):
    with pytest.raises(MRSuperResError, match="unknown engine"):
        make_runner(small, device="cpu", engine="tensorrt")
    with pytest.raises(MRSuperResError, match="fp16 runs on CUDA GPUs"):
        make_runner(small, device="cpu", precision="fp16", engine="openvino")


@pytest.mark.slow
def test_an_optional_engine_that_fails_is_left_out_not_fatal(home, small, monkeypatch):
    """A network OpenVINO cannot convert or run costs `auto` that candidate, never the run."""
    def broken(*args, **kwargs):
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(openvino_engine, "OpenVINONetwork", broken)
    choice = calibration.choose(small, CPU, refresh=True)
    assert choice.engine == "torch" and re.search(r"openvino-fp32[^;]* failed to run", choice.why)
    assert "conversion failed" in choice.measured["openvino-fp32"]["error"]
    with pytest.raises(RuntimeError):                             # asked for explicitly: the error shows
        make_runner(small, device="cpu", engine="openvino")
