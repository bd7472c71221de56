"""The fast paths (bf16, batching, tiling, constant slices, out-of-memory back-off, compile
guard) against the fp32 reference, on real MRI where it matters. Speed is measured by
`mrsuperres bench`, not asserted here."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import nearest_model, tiny_model

from MRSuperResLib.engine import devices, limits, slices as inference
from MRSuperResLib.pipeline import consistency
from MRSuperResLib.models.catalog import load_model
from MRSuperResLib.cli import main
from MRSuperResLib.errors import Cancelled, MRSuperResError
from MRSuperResLib.engine.devices import resolve_precision
from MRSuperResLib.engine.calibration import make_runner
from MRSuperResLib.pipeline.enhance import super_resolve_slices
from MRSuperResLib.scans.resample import downsample


def psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - b) ** 2))


@pytest.fixture(scope="module")
def real_lr_slices(sample_volume):
    """Three 36x36 LR slices of real MRI (bilinear x4 of the Colin27 sample), in [0, 1]."""
    data, _ = sample_volume
    data = data / data.max()
    hr = np.moveaxis(data[4:148, 20:164, 20:45:12], 2, 0).astype(np.float32)
    return np.clip(downsample(hr, 4, "bilinear"), 0, 1)


@pytest.fixture(scope="module")
def realesrgan():
    return load_model("realesrgan-x4plus-gray")[0]


def reference_loop(model, stack):
    """What RealESRGANer does on a CPU: one slice at a time, fp32, NCHW."""
    with torch.no_grad():
        return np.stack([model(torch.from_numpy(s[None, None]))[0, 0].clamp(0, 1).numpy() for s in stack])


def test_auto_precision_follows_the_hardware():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if devices.cpu_has_fast_bf16() else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(MRSuperResError, match="fp16 runs on CUDA"):
        resolve_precision("fp16", cpu)
    with pytest.raises(MRSuperResError, match="unknown precision"):
        resolve_precision("int3", cpu)


@pytest.mark.slow
def test_bf16_batched_path_matches_the_fp32_loop_on_real_mri(realesrgan, real_lr_slices):
    ref = reference_loop(realesrgan, real_lr_slices)
    fast = super_resolve_slices(realesrgan, real_lr_slices, device="cpu", precision="bf16", consistency="none")
    batched_fp32 = super_resolve_slices(realesrgan, real_lr_slices, device="cpu", precision="fp32", consistency="none")
    assert psnr(batched_fp32, ref) >= 80                    # batching and channels_last change nothing
    assert psnr(fast, ref) >= limits.ACCURACY_DB
    assert psnr(fast, ref) < 200                            # bf16 really ran (not fp32 in disguise)
    # anchoring (the default) scales by up to 4x: bf16 still agrees with the anchored fp32 loop
    anchored = super_resolve_slices(realesrgan, real_lr_slices, device="cpu", precision="bf16")
    assert psnr(anchored, consistency.anchor_to_input(ref, real_lr_slices)) >= limits.ACCURACY_DB


@pytest.mark.slow
def test_tiles_blend_without_seams_on_real_mri(realesrgan, sample_volume):
    data, _ = sample_volume
    one = (data[30:126, 40:136, 24] / data.max())[None].astype(np.float32)        # 96x96 of real MRI as LR
    # fp32: tiling is precision-independent, and without bf16 rounding noise in both outputs the
    # only tiled-vs-whole difference is the tiling's own (cut context, blending), so this is the
    # stricter check (no context: 39 dB, fails; with it: 61 dB). bf16 vs fp32 has its own test
    # above; bf16 here cost 5 minutes on CPUs without bf16 units (AVX2), fp32 costs 25 s.
    whole = super_resolve_slices(realesrgan, one, device="cpu", precision="fp32")
    tiled = super_resolve_slices(realesrgan, one, device="cpu", precision="fp32", tile=40)
    assert psnr(tiled, whole) >= limits.ACCURACY_DB
    # no seam: the error along the tile borders is no worse than a few times the error elsewhere
    err = np.abs(tiled - whole)[0]
    starts = inference.tile_starts(96, 40, limits.TILE_OVERLAP, 1)
    assert len(starts) >= 3
    borders = [4 * s for s in starts[1:]] + [4 * (s + 40) - 1 for s in starts[:-1]]
    assert err[:, borders].mean() < 5 * err.mean() + 1e-4
    assert err[borders, :].mean() < 5 * err.mean() + 1e-4


def test_tiling_is_exact_for_a_local_network():
    model = nearest_model(4)
    stack = np.random.default_rng(0).random((2, 37, 29)).astype(np.float32)
    whole = super_resolve_slices(model, stack, device="cpu", precision="fp32")
    for tile in (8, 13, 20):
        assert np.allclose(super_resolve_slices(model, stack, device="cpu", precision="fp32", tile=tile), whole,
                           atol=1e-6)


def test_out_of_memory_halves_the_batch_then_the_tile():
    model = nearest_model(4)
    shapes = []
    forward = model.forward

    def small_memory(x):
        shapes.append(tuple(x.shape))
        if x.shape[0] * x.shape[2] * x.shape[3] > 120 * 120:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(x)
    model.forward = small_memory
    stack = np.random.default_rng(1).random((3, 200, 200)).astype(np.float32)
    out = super_resolve_slices(model, stack, device="cpu", precision="fp32", batch_size=3)
    model.forward = forward
    assert shapes[0][0] == 3 and any(s[0] == 1 for s in shapes)          # batch halved to one slice
    assert max(s[2] for s in shapes[-4:]) <= 120                         # then the slice was tiled
    assert np.allclose(out, super_resolve_slices(model, stack, device="cpu", precision="fp32"), atol=1e-6)


def test_out_of_memory_on_the_smallest_tile_is_a_clear_error():
    model = tiny_model(4)

    def no_memory(x):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB")
    model.forward = no_memory
    with pytest.raises(MRSuperResError, match="out of memory on the CPU"):
        super_resolve_slices(model, np.zeros((2, 64, 64), np.float32) + 0.5, device="cpu", precision="fp32")


def test_constant_slices_run_once_and_match():
    model = tiny_model(4)
    rng = np.random.default_rng(2)
    stack = np.zeros((7, 16, 16), np.float32)
    stack[2], stack[4] = rng.random((16, 16)), rng.random((16, 16))
    stack[5] = stack[6] = 0.25
    seen = []
    forward = model.forward
    model.forward = lambda x: (seen.append(x.shape[0]), forward(x))[1]
    out = super_resolve_slices(model, stack, device="cpu", precision="fp32", batch_size=1, consistency="none")
    assert sum(seen) == 4                                   # zeros once, 0.25 once, two tissue slices
    anchored = super_resolve_slices(model, stack, device="cpu", precision="fp32", batch_size=1)
    model.forward = forward
    with torch.no_grad():
        each = np.stack([model(torch.from_numpy(s[None, None]))[0, 0].clamp(0, 1).numpy() for s in stack])
    assert np.allclose(out, each, atol=1e-5)
    assert np.allclose(anchored, consistency.anchor_to_input(each, stack), atol=1e-5)


def test_a_miscompiled_network_is_caught_and_replaced_by_the_eager_one():
    model = tiny_model(4)
    messages = []
    engine = make_runner(model, device="cpu", precision="fp32", notify=messages.append)
    eager = engine.model
    engine.model = lambda t: eager(t) + 0.3                 # what a wrong compilation looks like
    engine.compiled = engine._verify_compiled = True
    stack = np.random.default_rng(3).random((2, 16, 16)).astype(np.float32)
    out = super_resolve_slices(engine, stack)
    assert not engine.compiled and "differs from the eager network" in messages[0]
    assert np.allclose(out, super_resolve_slices(model, stack, device="cpu", precision="fp32"), atol=1e-6)


def _peaks_on_small_operands(device, queue, precisions=None):
    """Run by bench in its spawned child in place of `_measure_peaks`: the real `_measure_peaks`,
    every operand it draws 8x smaller in its last two dimensions (1024^2 matrices -> 128^2, 64x64
    feature maps -> 8x8). On CPUs without bf16 units (AVX2) bf16 is emulated and the full-size
    measurement takes about 25 s, most of this test's time. The code path (every
    precision, repeats, queue) is the real one; only the figures' size is not (its FLOP counts are
    of the full operands, so the peaks come out too high: this test checks they are written)."""
    import shutil

    import conftest
    import torch

    from MRSuperResLib.evaluation import bench as benchmark

    randn = torch.randn

    def smaller(*size, **kwargs):
        size = list(size[0] if len(size) == 1 and not isinstance(size[0], int) else size)
        size[-2:] = [max(1, d // 8) for d in size[-2:]]
        return randn(*size, **kwargs)

    torch.randn = smaller
    try:
        benchmark._measure_peaks(device, queue, precisions)
    finally:                    # importing this module here made the child its own test home
        shutil.rmtree(conftest.TEST_HOME, ignore_errors=True)


@pytest.mark.slow
def test_bench_writes_every_figure(tmp_path, save_tiny, capsys, monkeypatch):
    from MRSuperResLib.evaluation import bench as benchmark

    monkeypatch.setattr(benchmark, "_measure_peaks", _peaks_on_small_operands)
    model = save_tiny(nearest_model(4), "near")
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", str(model), "--slices", "3", "--size", "16", "16", "--json", str(out),
                 "--paths", "reference,fp32,bf16"]) == 0
    result = json.loads(out.read_text())
    names = [p["name"] for p in result["paths"]]
    assert names == ["reference", "fp32", "bf16"]
    assert result["auto"]["precision"] in ("fp32", "bf16") and result["auto"]["why"]
    assert result["startup_seconds"] > 0 and result["peak_tflops"]["fp32"] > 0
    assert {"fp32", "bf16"} <= set(result["peak_tflops"]) == set(result["peak_rounds"])     # the real measurement ran
    assert all(len(r) == benchmark.PEAK_ROUNDS for r in result["peak_rounds"].values())
    ref = result["paths"][0]
    for p in result["paths"]:
        assert p["seconds_per_slice"] > 0 and p["peak_rss_mb"] > 50
        assert p["speedup_vs_reference"] == pytest.approx(ref["seconds_per_slice"] / p["seconds_per_slice"])
        assert p["psnr_vs_fp32"] >= limits.ACCURACY_DB
    printed = capsys.readouterr().out
    assert "vs reference" in printed and "--precision auto here: " in printed


def test_a_gpu_out_of_memory_falls_back_to_the_cpu_with_a_message():
    """The back-off's last step, driven by a device that fails every allocation (no GPU here:
    the engine is told it is on CUDA and its forward fails as a full GPU would)."""
    model = nearest_model(4)
    messages = []
    engine = make_runner(model, device="cpu", precision="fp32", notify=messages.append)
    real_forward = engine.forward
    engine.device = torch.device("cuda")

    def gpu_forward(x):
        if engine.device.type == "cuda":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")
        return real_forward(x)
    engine.forward = gpu_forward
    engine._place = lambda compile: None               # nothing to move in this stand-in
    stack = np.random.default_rng(4).random((3, 40, 40)).astype(np.float32)
    out = super_resolve_slices(engine, stack)
    assert engine.device.type == "cpu" and "continuing on the CPU" in messages[0]
    assert engine.precision == "fp32"             # asked for: the fallback keeps it (auto would re-measure)
    assert psnr(out, super_resolve_slices(model, stack, device="cpu", precision="fp32")) >= limits.ACCURACY_DB


def test_self_ensemble_maps_each_symmetry_back_and_averages():
    rng = np.random.default_rng(0)
    stack = rng.random((2, 12, 20), dtype=np.float32)                  # not square: quarter turns swap h, w
    # nearest-neighbour upsampling commutes with flips and rotations, so a correct inverse
    # mapping gives back the plain output exactly; a wrong one would scramble it
    near = nearest_model()
    plain = super_resolve_slices(near, stack, device="cpu", precision="fp32")
    assert np.allclose(super_resolve_slices(near, stack, device="cpu", precision="fp32", self_ensemble=True),
                       plain, atol=1e-6)
    # a real (random) network is not equivariant: the ensemble is the mean of 8 different outputs
    net = tiny_model()
    seen = []
    spread = np.empty((2, 48, 80), np.float32)
    ens = super_resolve_slices(net, stack, device="cpu", precision="fp32", self_ensemble=True, tile=8,
                               progress=lambda d, t: seen.append((d, t)), spread=spread)
    outs = []
    for k in range(4):
        for flip in (False, True):
            x = np.rot90(stack, k, axes=(1, 2))
            y = super_resolve_slices(net, np.ascontiguousarray(x[:, :, ::-1] if flip else x), device="cpu",
                                     precision="fp32", tile=8)
            outs.append(np.rot90(y[:, :, ::-1] if flip else y, -k, axes=(1, 2)))
    assert ens.shape == (2, 48, 80) and np.allclose(ens, np.mean(outs, 0), atol=1e-6)
    assert np.allclose(spread, np.std(outs, 0), atol=1e-6)            # the uncertainty map: their spread
    assert np.abs(outs[0] - outs[3]).max() > 1e-3                        # the symmetries did differ
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1] == (2, 2)
    with pytest.raises(Cancelled):
        super_resolve_slices(net, stack, device="cpu", self_ensemble=True, cancel=lambda: True)


@pytest.mark.slow
def test_self_ensemble_raises_the_fidelity_models_psnr_on_real_mri(sample_volume):
    data, _ = sample_volume
    hr = np.moveaxis(data[4:148, 20:164, 20:45:12] / data.max(), 2, 0).astype(np.float32)
    lr = np.clip(downsample(hr, 4, "bilinear"), 0, 1)
    model, _ = load_model("mri-x4-fidelity")
    # fp32, the reference the fast paths are held to: the ensemble's gain is a property of the
    # network, not of the precision, and bf16 is 6-8x slower than fp32 on CPUs without bf16 units
    single = super_resolve_slices(model, lr, device="cpu", precision="fp32")
    ensemble = super_resolve_slices(model, lr, device="cpu", precision="fp32", self_ensemble=True)
    assert psnr(ensemble, hr) > psnr(single, hr) + 0.05


def test_bench_offers_only_the_precisions_this_device_has_units_for(tmp_path, save_tiny, monkeypatch):
    """Without --paths, bench times the reference and the calibration's candidates: an emulated
    bf16 (a CPU without bf16 units) is neither timed nor given a peak."""
    from MRSuperResLib.evaluation import bench as benchmark
    from MRSuperResLib.engine import calibration

    monkeypatch.setattr(calibration, "candidates", lambda device: ["fp32"])
    seen = []
    monkeypatch.setattr(benchmark, "_in_child", lambda target, *a, **k: (
        seen.append(k.get("precisions")) or ({"fp32": 1.0}, {"fp32": [1.0, 1.0, 1.0]})
        if target is benchmark._measure_peaks else ({"name": a[0], "precision": "fp32", "seconds_per_slice": 1.0,
                                                     "slices_per_second": 1.0, "peak_rss_mb": 100},
                                                    np.zeros((1, 64, 64), np.float32))))
    monkeypatch.setattr(benchmark, "startup_seconds", lambda spec: 1.0)
    result = benchmark.run_bench(str(save_tiny(nearest_model(4), "near")), slices=1, size=(16, 16), device="cpu",
                                 log=lambda text: None)
    assert [p["name"] for p in result["paths"]] == ["reference", "fp32"] and seen == [["fp32"]]
