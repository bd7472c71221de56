"""`precision="auto"` is chosen by measuring on this machine, cached per machine and architecture,
and never trusts a cache it cannot read or that describes another machine."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_model

from MRSuperResLib.engine import calibration
from MRSuperResLib.engine.choice import Choice
from MRSuperResLib.engine.calibration import choose, pick

CPU = torch.device("cpu")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MRSUPERRES_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "calibration.json"


@pytest.fixture
def bf16_offered(monkeypatch):
    """Time bf16 as a CPU with bf16 units would: on a CPU without them bf16 is emulated and slow,
    which is exactly the machine where flags-based choice went wrong."""
    monkeypatch.setattr(calibration, "candidates", lambda device: ["fp32", "bf16"])


def test_an_explicit_precision_is_used_as_asked(cache):
    assert choose(tiny_model(4), CPU, "fp32") == Choice("fp32", "asked for")
    assert choose(tiny_model(4), CPU, "bf16").precision == "bf16"
    assert not cache.exists()


def test_a_single_candidate_needs_no_measurement(cache, monkeypatch):
    monkeypatch.setattr(calibration, "candidates", lambda device: ["fp32"])
    monkeypatch.setattr(calibration, "measure", lambda *a, **k: pytest.fail("measured"))
    choice = choose(tiny_model(4), CPU)
    assert choice.precision == "fp32" and "no bf16 units" in choice.why and not cache.exists()


def test_pick_takes_the_fastest_that_agrees_with_fp32():
    slow_bf16 = {"fp32": {"seconds_per_slice": 0.70, "psnr_vs_fp32": float("inf")},
                 "bf16": {"seconds_per_slice": 1.12, "psnr_vs_fp32": 47.0}}
    assert pick(slow_bf16)[0] == "fp32"                       # bf16 slower than fp32: never chosen
    fast_bf16 = {**slow_bf16, "bf16": {"seconds_per_slice": 0.38, "psnr_vs_fp32": 47.2}}
    assert pick(fast_bf16)[0] == "bf16"
    inaccurate = {**slow_bf16, "bf16": {"seconds_per_slice": 0.2, "psnr_vs_fp32": 30.0}}
    precision, why = pick(inaccurate)
    assert precision == "fp32" and "bf16 below 45 dB" in why


@pytest.mark.slow
def test_emulated_bf16_loses_to_fp32_by_measurement_and_the_choice_is_cached(cache, bf16_offered, monkeypatch):
    model = tiny_model(4, blocks=2, feat=32, grow=16)
    notes = []
    choice = choose(model, CPU, notify=notes.append)
    measured = choice.measured
    assert set(measured) == {"fp32", "bf16"} and notes and "timing fp32, bf16" in notes[0]
    assert measured["bf16"]["psnr_vs_fp32"] >= 30
    fastest = min(measured, key=lambda p: measured[p]["seconds_per_slice"])
    assert choice.precision == fastest and "fastest measured here" in choice.why
    if not torch.cpu._is_avx512_bf16_supported():
        assert choice.precision == "fp32"                     # this CPU emulates bf16: slower
    entry = json.loads(cache.read_text())["entries"][0]
    assert entry["key"]["architecture"]["num_feat"] == 32 and entry["choice"]["precision"] == choice.precision
    monkeypatch.setattr(calibration, "measure", lambda *a, **k: pytest.fail("measured again"))
    again = choose(model, CPU)
    assert again.cached and again.precision == choice.precision


def test_an_unreadable_or_foreign_cache_is_measured_again(cache, bf16_offered, monkeypatch):
    runs = []

    def fake_measure(model, device, precisions, strict=False):
        runs.append(precisions)
        return {"fp32": {"seconds_per_slice": 1.0, "psnr_vs_fp32": float("inf")},
                "bf16": {"seconds_per_slice": 0.5, "psnr_vs_fp32": 50.0}}

    monkeypatch.setattr(calibration, "measure", fake_measure)
    model = tiny_model(4)
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    assert choose(model, CPU).precision == "bf16" and len(runs) == 1
    data = json.loads(cache.read_text())
    data["entries"][0]["key"]["cpu"] = "another CPU"
    cache.write_text(json.dumps(data))
    assert not choose(model, CPU).cached and len(runs) == 2            # another machine's figures
    assert choose(model, CPU).cached and len(runs) == 2
    assert not choose(model, CPU, refresh=True).cached and len(runs) == 3   # bench --calibrate
    data = json.loads(cache.read_text())
    data["version"] = 0
    cache.write_text(json.dumps(data))
    assert not choose(model, CPU).cached and len(runs) == 4
    other = tiny_model(4, blocks=2)                                     # another architecture
    assert not choose(other, CPU).cached and len(runs) == 5
    assert len(json.loads(cache.read_text())["entries"]) == 2


def test_the_choice_is_recorded_in_run_facts(cache, tmp_path):
    from MRSuperResLib.evaluation.protocol import evaluate
    from MRSuperResLib.pipeline.enhance import enhance_volume
    from MRSuperResLib.scans.volumes import Volume

    model = tiny_model(4)
    volume = Volume(np.random.default_rng(0).random((40, 40, 2)).astype(np.float32), np.eye(4))
    _, facts = enhance_volume(volume, model, axis=2, device="cpu")
    assert facts["precision"] in ("fp32", "bf16") and facts["precision_why"]
    _, forced = enhance_volume(volume, model, axis=2, device="cpu", precision="fp32")
    assert forced["precision_why"] == "asked for"
    from conftest import write_nifti
    path = write_nifti(tmp_path / "hr.nii.gz", np.random.default_rng(1).random((48, 48, 2)).astype(np.float32))
    record = evaluate([str(path)], model, scale=4, axis=2)["model"]
    assert record["precision"] == facts["precision"] and record["precision_why"] == facts["precision_why"]


def test_the_measured_batch_is_the_engines_default(cache, bf16_offered, monkeypatch):
    """One slice per pass where that measured faster: the engine's default batch follows it."""
    from MRSuperResLib.pipeline.enhance import super_resolve_slices

    monkeypatch.setattr(calibration, "measure", lambda model, device, labels, strict=False: {
        "fp32": {"seconds_per_slice": 1.0, "batch": 1, "psnr_vs_fp32": float("inf")},
        "bf16": {"seconds_per_slice": 2.0, "batch": 4, "psnr_vs_fp32": 50.0}})
    model = tiny_model(4)
    engine = calibration.make_runner(model, device="cpu")
    assert engine.choice.batch_pixels == 60 * 60 and "1 slice per pass" in engine.choice.why
    sizes = []
    forward = engine.forward
    monkeypatch.setattr(engine, "forward", lambda x: sizes.append(len(x)) or forward(x))
    super_resolve_slices(engine, np.random.default_rng(0).random((3, 60, 60)).astype(np.float32))
    assert sizes == [1, 1, 1]                                    # the measured budget: one 60x60 slice
    sizes.clear()
    super_resolve_slices(engine, np.random.default_rng(0).random((4, 30, 30)).astype(np.float32))
    assert sizes == [4]                                          # the same pixels: four 30x30 slices
