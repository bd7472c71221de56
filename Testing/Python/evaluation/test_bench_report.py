"""`bench` says when its own peak measurement cannot be trusted instead of printing impossible fractions."""
from __future__ import annotations

import pytest

from MRSuperResLib.evaluation.bench import PEAK_SPREAD_LIMIT, format_row, measurement_warnings


def path(name: str, precision: str, fraction: float) -> dict:
    return dict(name=name, precision=precision, fraction_of_peak=fraction, seconds_per_slice=0.4,
                slices_per_second=2.5, tflops=0.3, speedup_vs_reference=1.0, psnr_vs_fp32=47.0, peak_rss_mb=700)


def test_a_quiet_run_has_no_warning():
    result = {"peak_rounds": {"fp32": [0.220, 0.215, 0.221], "bf16": [0.46, 0.45, 0.46]},
              "paths": [path("reference", "fp32", 0.83), path("bf16", "bf16", 0.74)]}
    assert measurement_warnings(result) == []
    assert "83% of peak" in format_row(result["paths"][0])


def test_a_path_above_the_peak_is_called_disturbed_and_a_rerun_recommended():
    result = {"peak_rounds": {"fp32": [0.22, 0.22, 0.22], "bf16": [0.14, 0.14, 0.14]},
              "paths": [path("reference", "fp32", 0.8), path("bf16", "bf16", 1.19)]}
    warnings = measurement_warnings(result)
    assert any("bf16 ran at 119% of the bf16 peak" in w for w in warnings)
    assert "rerun `mrsuperres bench`" in warnings[-1]
    row = format_row(result["paths"][1])
    assert "119%" not in row and "above the measured peak: disturbed" in row


def test_peaks_that_vary_across_repeats_are_reported():
    busy = [0.22, 0.22 * (1 - PEAK_SPREAD_LIMIT - 0.05), 0.15]           # two of three repeats slowed
    warnings = measurement_warnings({"peak_rounds": {"fp32": busy}, "paths": []})
    assert warnings and "fp32 peak varied by 20% across 3 repeats" in warnings[0]
    one_slow = [0.22, 0.15, 0.215]                                           # a single slow repeat is noise
    assert measurement_warnings({"peak_rounds": {"fp32": one_slow}, "paths": []}) == []


@pytest.mark.slow
def test_the_batch_sweep_times_the_auto_path_at_each_size_and_batch(tmp_path):
    """`bench --sweep`: seconds per slice and fraction of the measured peak per (slice size, batch)."""
    from conftest import tiny_model

    from MRSuperResLib.evaluation.bench import sweep_batches
    from MRSuperResLib.models.weights import save_model

    path = tmp_path / "small.safetensors"
    save_model(tiny_model(4, blocks=1, feat=16, grow=8), path, {"name": "small"})
    lines = []
    result = sweep_batches(str(path), device="cpu", sizes=(16, 24), batches=(1, 2), log=lines.append)
    assert [(r["lr_size"], r["batch"]) for r in result["rows"]] == [(16, 1), (16, 2), (24, 1), (24, 2)]
    assert all(r["seconds_per_slice"] > 0 and 0 < r["fraction_of_peak"] for r in result["rows"])
    assert result["path"].startswith("torch ") and result["peak_tflops"] > 0    # tests keep auto on torch
    assert any(line.startswith(f"sweep: {result['path']}") for line in lines) and len(lines) >= 5
