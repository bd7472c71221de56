"""Each shared concept has one home: min-max normalisation (volumes), scoring (metrics), k-space
truncation (resample) and device choice (devices). These pin down what every caller relies on."""
from __future__ import annotations

import platform
import re

import numpy as np
import pytest
import torch

from MRSuperResLib.engine import devices
from MRSuperResLib.evaluation.metrics import METRICS, score_slices, slice_metrics, summarise
from MRSuperResLib.training.degradation import mri_degrade
from MRSuperResLib.scans.resample import downsample, kspace_downsample, tukey
from MRSuperResLib.scans.volumes import denormalise, intensity_range, normalise


# ----------------------------------------------------------------------------- normalisation

def test_normalise_is_the_float32_min_max_formula_and_denormalise_inverts_it():
    rng = np.random.default_rng(0)
    data = (rng.random((5, 6, 7)) * 900 - 100).astype(np.float32)
    lo, hi = intensity_range(data)
    x01 = normalise(data)
    expected = (data.astype(np.float32) - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    assert x01.dtype == np.float32 and np.array_equal(x01, expected)     # bit for bit
    assert x01.min() == 0 and x01.max() <= 1
    back = denormalise(x01, lo, hi)
    assert back.dtype == np.float32 and back is not x01
    assert np.allclose(back, data, rtol=0, atol=1e-6 * (hi - lo))
    assert np.array_equal(back, x01 * np.float32(hi - lo) + np.float32(lo))


def test_normalise_on_another_volumes_range_clips_and_leaves_its_input_alone():
    data = np.array([[-5.0, 0.0], [10.0, 20.0]], dtype=np.float32)
    before = data.copy()
    out = normalise(data, (0.0, 10.0), clip=True)
    assert np.array_equal(out, [[0, 0], [1, 1]]) and np.array_equal(data, before)
    assert normalise(data, (0.0, 10.0)).max() == 2          # no clip unless asked


def test_denormalise_in_place_writes_into_its_argument():
    x01 = np.linspace(0, 1, 11, dtype=np.float32)
    expected = x01 * np.float32(40.0) + np.float32(-8.0)
    out = denormalise(x01, -8.0, 32.0, in_place=True)
    assert out is x01 and np.array_equal(out, expected)


# ----------------------------------------------------------------------------- scoring

def test_score_slices_is_per_slice_metrics_then_summarise():
    rng = np.random.default_rng(1)
    gt = rng.random((3, 64, 64)).astype(np.float32)
    outputs = {"model": np.clip(gt + rng.normal(0, 0.05, gt.shape), 0, 1).astype(np.float32),
               "bicubic": np.clip(gt + rng.normal(0, 0.1, gt.shape), 0, 1).astype(np.float32)}
    ids = np.array([4, 9, 12])
    rows, summary = score_slices(gt, outputs, ids)
    assert [(r["slice"], r["method"]) for r in rows] == [(i, m) for i in (4, 9, 12) for m in ("model", "bicubic")]
    assert all(type(r["slice"]) is int for r in rows)                    # JSON-safe ids
    for r in rows:
        k = list(ids).index(r["slice"])
        assert {m: r[m] for m in METRICS} == slice_metrics(gt[k], outputs[r["method"]][k])
    assert list(summary) == ["model", "bicubic"]
    for m in outputs:
        assert summary[m] == summarise([slice_metrics(gt[k], outputs[m][k]) for k in range(3)])
    assert summary["model"]["psnr"]["mean"] > summary["bicubic"]["psnr"]["mean"]


def test_score_slices_numbers_slices_from_zero_and_refuses_mismatched_shapes():
    gt = np.full((2, 16, 16), 0.5, np.float32)
    rows, summary = score_slices(gt, {"same": gt.copy()})
    assert [r["slice"] for r in rows] == [0, 1] and summary["same"]["ssim"]["mean"] == pytest.approx(1.0)
    assert summary["same"]["psnr"]["n"] == 0                              # inf PSNR is left out of the mean
    with pytest.raises(ValueError, match="shape"):
        score_slices(gt, {"bad": gt[:, :8]})


# ----------------------------------------------------------------------------- k-space truncation

def _band_limited(h: int, w: int) -> np.ndarray:
    y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return (0.5 + 0.2 * np.cos(2 * np.pi * 3 * y / h + 0.4) + 0.1 * np.sin(2 * np.pi * 2 * x / w)).astype(np.float32)


def test_kspace_without_window_is_the_kspace_degradation_and_alpha_zero_is_no_window():
    stack = np.random.default_rng(2).random((2, 48, 36)).astype(np.float32)
    plain = kspace_downsample(stack, 4)
    assert plain.dtype == np.float32 and plain.shape == (2, 12, 9)
    assert np.array_equal(plain, downsample(stack, 4, "kspace"))
    assert np.array_equal(kspace_downsample(stack, 4, window_alpha=0.0), plain)


def test_kspace_window_multiplies_the_kept_spectrum_by_a_tukey_window():
    # odd LR sizes: the kept block and the window are symmetric about DC, so no part is lost to .real
    stack = np.random.default_rng(3).random((2, 60, 44)).astype(np.float32)
    s, alpha = 4, 0.5
    plain, windowed = kspace_downsample(stack, s), kspace_downsample(stack, s, window_alpha=alpha)
    window = np.fft.ifftshift(np.outer(tukey(60 // s, alpha), tukey(44 // s, alpha)))
    assert not np.allclose(windowed, plain, atol=1e-3)
    assert np.allclose(np.fft.fft2(windowed), np.fft.fft2(plain) * window, atol=1e-4)
    flat = np.full((1, 64, 48), 0.7, np.float32)                           # DC passes the window
    assert np.allclose(kspace_downsample(flat, s, window_alpha=alpha), 0.7, atol=1e-6)


def test_plain_kspace_truncation_of_a_band_limited_slice_is_exact():
    lr = kspace_downsample(_band_limited(64, 48)[None], 4)[0]
    c = 4 * np.arange(16) + 1.5, 4 * np.arange(12) + 1.5                   # LR pixel j at HR 4 j + 3/2
    yy, xx = np.meshgrid(*c, indexing="ij")
    expected = 0.5 + 0.2 * np.cos(2 * np.pi * 3 * yy / 64 + 0.4) + 0.1 * np.sin(2 * np.pi * 2 * xx / 48)
    assert np.abs(lr - expected).max() < 1e-5


def test_the_mri_chain_stays_reproducible_and_in_range():
    hr = np.random.default_rng(4).random((64, 48)).astype(np.float32)
    a, b = mri_degrade(hr, 4, np.random.default_rng(7)), mri_degrade(hr, 4, np.random.default_rng(7))
    assert a.shape == (16, 12) and a.dtype == np.float32 and np.array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 1


# ----------------------------------------------------------------------------- devices

def test_device_name_says_what_the_run_ran_on(monkeypatch):
    cpu = devices.device_name(torch.device("cpu"))
    assert re.fullmatch(r"cpu \(.+, \d+ threads\)", cpu)
    assert cpu == f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU 80GB")
    assert devices.device_name(torch.device("cuda")) == "cuda (Test GPU 80GB)"


def test_devices_is_the_one_home_of_device_and_precision_choice():
    from MRSuperResLib.engine import slices as inference

    assert devices.PRECISIONS == ("auto", "fp32", "bf16", "fp16")
    assert devices.select_device("cpu") == torch.device("cpu")
    assert devices.resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert not hasattr(inference, "cpu_has_fast_bf16") and not hasattr(inference, "PRECISIONS")
