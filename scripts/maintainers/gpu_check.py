"""End-to-end check of the CUDA paths, for the first machine with a GPU; prints figures and a verdict.

    python scripts/maintainers/gpu_check.py [--model mri-x4-fidelity] [--slices 64] [--json gpu_check.json]
    python scripts/maintainers/gpu_check.py --device cpu      # the same code on the CPU (no out-of-memory part)

What it runs, each step reported as ok / FAILED with its figures:
1. the device's measured peak TFLOP/s per precision (as `mrsuperres bench` measures it);
2. fp32, fp16 and bf16 inference on real MRI slices, 60x60 -> 240x240 at x4: slices per second,
   TFLOP/s and fraction of the peak, PSNR against fp32 (fast paths must reach 45 dB);
3. what `--precision auto` chooses here, measured;
4. torch.compile on the chosen precision, checked against the eager network;
5. out-of-memory back-off: the GPU filled to a few hundred MB first, then a large batch must
   still finish (the engine halves batch and tile) and agree with the unfilled result;
6. CPU fallback: with the GPU full, even the smallest tile fails, and the run must finish on the
   CPU with a message;
7. a few training iterations of a small generator in each precision (`mrsuperres train`).
Exit status 0 when every step passed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> int:
    import torch

    from MRSuperResLib.evaluation import bench as benchmark
    from MRSuperResLib.engine.calibration import bench_slices, candidates, choose, make_runner, psnr
    from MRSuperResLib.models.catalog import load_model
    from MRSuperResLib.options import SAMPLE_VOLUME
    from MRSuperResLib.engine.limits import ACCURACY_DB
    from MRSuperResLib.pipeline.enhance import super_resolve_slices

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mri-x4-fidelity")
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", default=None, help="also write the report here")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: PyTorch sees no CUDA GPU here (torch %s); nothing to check" % torch.__version__)
        return 1
    dev = torch.device(args.device)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "torch": torch.__version__, "steps": {}}
    report["device"] = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    failures = []

    def step(name: str, ok: bool, **figures) -> None:
        report["steps"][name] = {"ok": bool(ok), **figures}
        print(f"{'ok    ' if ok else 'FAILED'} {name}: " + ", ".join(f"{k} {v}" for k, v in figures.items()),
              flush=True)
        if not ok:
            failures.append(name)

    model, card = load_model(args.model)
    stack = bench_slices(None, args.slices, (60, 60), model.scale)
    flops = benchmark.conv_flops_per_slice(model, 60, 60)
    peaks, _ = benchmark._in_child(benchmark._measure_peaks, str(dev))
    step("peak", True, **{f"{k}_tflops": round(v, 2) for k, v in peaks.items()})

    outputs = {}
    for precision in ["fp32"] + [p for p in candidates(dev) if p != "fp32"]:
        runner = make_runner(model, device=dev, precision=precision)
        super_resolve_slices(runner, stack[:8], consistency="none")                   # warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        outputs[precision] = super_resolve_slices(runner, stack, consistency="none")
        seconds = time.perf_counter() - t0
        tflops = flops * len(stack) / seconds / 1e12
        agree = psnr(outputs[precision], outputs["fp32"])
        step(f"inference {precision}", precision == "fp32" or agree >= ACCURACY_DB,
             slices_per_second=round(len(stack) / seconds, 2), tflops=round(tflops, 3),
             of_peak=f"{100 * tflops / peaks[precision]:.0f}%" if precision in peaks else "n/a",
             psnr_vs_fp32=round(agree, 1))

    choice = choose(model, dev, refresh=True)
    step("auto choice", True, precision=choice.precision, why=choice.why)

    runner = make_runner(model, device=dev, precision=choice.precision, compile=True)
    compiled = super_resolve_slices(runner, stack[:8], consistency="none")
    step("compile", psnr(compiled, outputs[choice.precision][:8]) >= ACCURACY_DB,
         compiled=runner.compiled, psnr_vs_eager=round(psnr(compiled, outputs[choice.precision][:8]), 1))

    if dev.type == "cuda":
        def fill(leave_mb: int) -> list:
            """Allocate the GPU until about `leave_mb` MB are free."""
            blocks = []
            while True:
                free, _ = torch.cuda.mem_get_info(dev)
                take = free - leave_mb * 2**20
                if take < 64 * 2**20:
                    return blocks
                try:
                    blocks.append(torch.empty(min(take, 2**31), dtype=torch.uint8, device=dev))
                except torch.OutOfMemoryError:
                    return blocks

        big = np.repeat(stack[:4], 16, axis=0)                          # 64 slices in one requested batch
        notes = []
        runner = make_runner(model, device=dev, precision=choice.precision, notify=notes.append)
        blocks = fill(400)
        try:
            out = super_resolve_slices(runner, big, batch_size=64, consistency="none")
        finally:
            del blocks
            torch.cuda.empty_cache()
        step("out-of-memory back-off", runner.device.type == "cuda" and psnr(out[:4], outputs[choice.precision][:4]) >= ACCURACY_DB,
             notes=len(notes), device=str(runner.device))
        notes = []
        runner = make_runner(model, device=dev, precision=choice.precision, notify=notes.append)
        blocks = fill(8)
        try:
            out = super_resolve_slices(runner, stack[:2], batch_size=2, consistency="none")
        finally:
            del blocks
            torch.cuda.empty_cache()
        step("CPU fallback", runner.device.type == "cpu" and any("continuing on the CPU" in n for n in notes),
             device=str(runner.device), message=notes[-1] if notes else None)

    for precision in ["fp32"] + [p for p in candidates(dev) if p != "fp32"]:
        with tempfile.TemporaryDirectory() as run:
            t0 = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "MRSuperResLib", "train", "--data", str(SAMPLE_VOLUME), "--out", run + "/r",
                 "--stage", "gan", "--init", "scratch", "--blocks", "2", "--features", "32", "--growth", "16",
                 "--iters", "6", "--batch", "4", "--patch", "64", "--val-every", "6", "--device", dev.type,
                 "--precision", precision], capture_output=True, text=True, cwd=ROOT)
            step(f"training {precision}", done.returncode == 0 and Path(run, "r", "model.safetensors").exists(),
                 seconds=round(time.perf_counter() - t0, 1), error=done.stderr.strip().splitlines()[-1:] or None)

    print(f"{'all steps passed' if not failures else 'FAILED: ' + ', '.join(failures)} on {report['device']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
