"""End-to-end check of the CUDA paths, for the first machine with a GPU; prints figures and a verdict.

    python scripts/maintainers/gpu_check.py [--model mri-x4-fidelity] [--slices 64] [--json gpu_check.json]
    python scripts/maintainers/gpu_check.py --device cpu      # the same code on the CPU (no out-of-memory part)

What it runs, each step reported as ok / FAILED with its figures and its seconds:
1. the device's measured peak TFLOP/s per precision (as `mrsuperres bench` measures it);
2. fp32, fp16 and bf16 inference on real MRI slices, 60x60 -> 240x240 and 256x256 -> 1024x1024 at
   x4: slices per second, TFLOP/s and fraction of the peak, PSNR against fp32 (fast paths must
   reach 45 dB);
3. what `--precision auto` chooses here, measured;
4. torch.compile on the chosen precision, checked against the eager network;
5. out-of-memory back-off: the GPU filled to a few hundred MB first, then a large batch must
   still finish (the engine halves batch and tile) and agree with the unfilled result;
6. CPU fallback: with the GPU full, even the smallest tile fails, and the run must finish on the
   CPU with a message;
7. a few training iterations of a small generator in each precision (`mrsuperres train`, GAN stage
   without the perceptual loss: its VGG weights come from the network, which a GPU machine may lack).
A step that raises is reported FAILED with its error and the others still run; `--json` is
rewritten after every step, so a run cut short (a time limit) still returns what it measured.
Exit status 0 when every step passed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    import torch

    from MRSuperResLib.evaluation import bench as benchmark
    from MRSuperResLib.engine.calibration import bench_slices, candidates, choose, make_runner, psnr
    from MRSuperResLib.models.catalog import load_model
    from MRSuperResLib.options import SAMPLE_VOLUME
    from MRSuperResLib.engine.limits import ACCURACY_DB
    from MRSuperResLib.pipeline.enhance import super_resolve_slices

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mri-x4-fidelity")
    parser.add_argument("--slices", type=int, default=64, help="60x60 slices timed per precision")
    parser.add_argument("--big-slices", type=int, default=16, help="large slices timed per precision (0: none)")
    parser.add_argument("--big-size", type=int, default=256, help="their input side (256: 1024x1024 outputs at x4)")
    parser.add_argument("--train-iters", type=int, default=6, help="training iterations per precision")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", default=None, help="also write the report here (after every step)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: PyTorch sees no CUDA GPU here (torch %s); nothing to check" % torch.__version__)
        return 1
    dev = torch.device(args.device)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "torch": torch.__version__, "finished": False, "steps": {}}
    report["device"] = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    failures = []

    def save() -> None:
        """Atomically: the run may be ended at any moment by its caller's deadline."""
        if args.json:
            partial = Path(f"{args.json}.partial")
            partial.write_text(json.dumps(report, indent=1))
            os.replace(partial, args.json)

    def step(name: str, measure) -> dict:
        """Run one step (`measure()` -> (ok, figures)); an exception fails it alone."""
        t0 = time.perf_counter()
        try:
            ok, figures = measure()
        except Exception as exc:                         # reported, and the next step still runs
            ok, figures = False, {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
        figures["seconds"] = round(time.perf_counter() - t0, 2)
        report["steps"][name] = {"ok": bool(ok), **figures}
        print(f"{'ok    ' if ok else 'FAILED'} {name}: " + ", ".join(f"{k} {v}" for k, v in figures.items()),
              flush=True)
        if not ok:
            failures.append(name)
        save()
        return figures

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    model, _ = load_model(args.model)
    precisions = ["fp32"] + [p for p in candidates(dev) if p != "fp32"]
    peaks = {}

    def measure_peaks():
        # only the precisions run below, as `mrsuperres bench` does: an emulated bf16 peak (a CPU
        # without bf16 units) took 19 s of an 18 s check budget on a 2-core AVX2 EPYC
        peaks.update(benchmark._in_child(benchmark._measure_peaks, str(dev), precisions=precisions)[0])
        return True, {f"{k}_tflops": round(v, 2) for k, v in peaks.items()}

    step("peak", measure_peaks)

    sizes = [(60, args.slices)] + ([(args.big_size, args.big_slices)] if args.big_slices > 0 else [])
    outputs = {}                                         # (side, precision) -> SR stack
    for side, count in sizes:
        stack = bench_slices(None, count, (side, side), model.scale)
        flops = benchmark.conv_flops_per_slice(model, side, side)
        label = f"{side}x{side}->{side * model.scale}x{side * model.scale}"
        for precision in precisions:
            def infer(side=side, stack=stack, flops=flops, precision=precision):
                runner = make_runner(model, device=dev, precision=precision)
                super_resolve_slices(runner, stack[:min(len(stack), 8 if side <= 64 else 2)], consistency="none")
                sync()                                   # the warm-up above is not timed
                t0 = time.perf_counter()
                outputs[side, precision] = super_resolve_slices(runner, stack, consistency="none")
                sync()
                seconds = time.perf_counter() - t0
                tflops = flops * len(stack) / seconds / 1e12
                agree = psnr(outputs[side, precision], outputs[side, "fp32"]) if (side, "fp32") in outputs else None
                return precision == "fp32" or (agree is not None and agree >= ACCURACY_DB), dict(
                    slices_per_second=round(len(stack) / seconds, 2), tflops=round(tflops, 3),
                    of_peak=f"{100 * tflops / peaks[precision]:.0f}%" if peaks.get(precision) else "n/a",
                    psnr_vs_fp32=None if agree is None else round(agree, 1), device=str(runner.device))

            step(f"inference {precision} {label}", infer)

    choice = None

    def auto_choice():
        nonlocal choice
        choice = choose(model, dev, refresh=True)
        return True, dict(precision=choice.precision, why=choice.why)

    step("auto choice", auto_choice)
    chosen = choice.precision if choice is not None else "fp32"
    small = bench_slices(None, 8, (60, 60), model.scale)
    eager = []                                           # the eager network's output, made once when first needed

    def eager_output() -> np.ndarray:
        if not eager:
            eager.append(super_resolve_slices(make_runner(model, device=dev, precision=chosen), small,
                                              consistency="none"))
        return eager[0]

    def compiled():
        runner = make_runner(model, device=dev, precision=chosen, compile=True)
        agree = psnr(super_resolve_slices(runner, small, consistency="none"), eager_output())
        return agree >= ACCURACY_DB, dict(compiled=runner.compiled, psnr_vs_eager=round(agree, 1))

    step("compile", compiled)

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

        def back_off():
            big = np.repeat(small[:4], 16, axis=0)                     # 64 slices in one requested batch
            reference = eager_output()                                  # made before the GPU is filled
            notes = []
            runner = make_runner(model, device=dev, precision=chosen, notify=notes.append)
            blocks = fill(400)
            try:
                out = super_resolve_slices(runner, big, batch_size=64, consistency="none")
            finally:
                del blocks
                torch.cuda.empty_cache()
            agree = psnr(out[:4], reference[:4])
            return runner.device.type == "cuda" and agree >= ACCURACY_DB, dict(
                notes=len(notes), device=str(runner.device), psnr_vs_unfilled=round(agree, 1))

        def fallback():
            notes = []
            runner = make_runner(model, device=dev, precision=chosen, notify=notes.append)
            blocks = fill(8)
            try:
                super_resolve_slices(runner, small[:2], batch_size=2, consistency="none")
            finally:
                del blocks
                torch.cuda.empty_cache()
            return runner.device.type == "cpu" and any("continuing on the CPU" in n for n in notes), dict(
                device=str(runner.device), message=notes[-1] if notes else None)

        step("out-of-memory back-off", back_off)
        step("CPU fallback", fallback)

    for precision in precisions:
        def train(precision=precision):
            with tempfile.TemporaryDirectory() as run:
                iters = str(args.train_iters)
                done = subprocess.run(
                    [sys.executable, "-m", "MRSuperResLib", "train", "--data", str(SAMPLE_VOLUME), "--out", run + "/r",
                     "--stage", "gan", "--perceptual-weight", "0", "--init", "scratch", "--blocks", "2",
                     "--features", "32", "--growth", "16", "--iters", iters, "--batch", "4", "--patch", "64",
                     "--val-every", iters, "--device", dev.type, "--precision", precision],
                    capture_output=True, text=True, cwd=ROOT)
                ok = done.returncode == 0 and Path(run, "r", "model.safetensors").exists()
                return ok, dict(error=None if ok else done.stderr.strip().splitlines()[-1:] or None)

        step(f"training {precision}", train)

    report["finished"] = True
    report["passed"] = not failures
    save()
    print(f"{'all steps passed' if not failures else 'FAILED: ' + ', '.join(failures)} on {report['device']}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
