"""`mrsuperres bench`: how fast each inference path runs, against the reference loop, in one run.

The reference loop is what RealESRGANer does on a CPU: one slice at a time, fp32, NCHW, no
batching. Each path runs in its own spawned process (so its peak RSS is its own), on the same
real MRI slices, after one untimed warm-up batch; its output is compared with the reference
loop's by PSNR on [0, 1]. The device's peak is measured in the same run (the faster of a large
matmul and a large 3x3 convolution per precision), so the fraction of peak is of this machine.
"""
from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..engine.calibration import bench_slices, psnr
from ..options import PROJECT_DIR

PATHS = {                       # name -> (precision, batched, compile)
    "reference": ("fp32", False, False),
    "fp32": ("fp32", True, False),
    "bf16": ("bf16", True, False),
    "fp16": ("fp16", True, False),
    "bf16-compile": ("bf16", True, True),
    "fp16-compile": ("fp16", True, True),
}


def conv_flops_per_slice(model, h: int, w: int) -> float:
    """Multiply-adds x 2 of every convolution for one h x w LR slice (counted by hooks)."""
    import torch

    total = [0]

    def hook(module, inputs, output):
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total[0] += 2 * output.numel() * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 1, h, w))
    finally:
        for handle in handles:
            handle.remove()
    return float(total[0])


def _peak_rss_mb() -> float:
    """This process's peak resident memory; NaN where the OS has no `resource` module (Windows)."""
    try:
        import resource
    except ImportError:
        return float("nan")
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def _run_path(name: str, model_spec: str | None, stack: np.ndarray, device: str, batch_size: int | None,
              queue) -> None:
    """Child process: time one path; put (facts, output) on the queue."""
    import torch

    from ..models.catalog import load_model
    from ..engine.devices import use_all_cores
    from ..engine.batches import run_slices
    from ..engine.slices import SliceEngine

    try:
        precision, batched, compile_ = PATHS[name]
        model, _ = load_model(model_spec)
        facts = dict(name=name, precision=precision)
        if name == "reference":
            dev = torch.device("cuda" if device == "cuda" else "cpu")
            if dev.type == "cpu":
                use_all_cores()
            model = model.to(dev).eval()
            out = np.empty((stack.shape[0], stack.shape[1] * model.scale, stack.shape[2] * model.scale), np.float32)

            def one(i):
                with torch.no_grad():
                    x = torch.from_numpy(stack[i:i + 1, None]).to(dev)
                    out[i] = model(x)[0, 0].clamp(0, 1).cpu().numpy()
            one(0)
            t0 = time.perf_counter()
            for i in range(stack.shape[0]):
                one(i)
            seconds = time.perf_counter() - t0
            facts.update(batch=1, device=str(dev))
        else:
            runner = SliceEngine(model, device=device, precision=precision, compile=compile_)
            batch = batch_size or None
            t0 = time.perf_counter()
            # warm-up; a compiled network sees every batch shape of the timed run first (each
            # new shape compiles again, which would be timed otherwise)
            run_slices(runner, stack if compile_ else stack[: (batch or 8)].copy(), batch_size=batch)
            facts["warmup_seconds"] = time.perf_counter() - t0
            if runner.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = run_slices(runner, stack, batch_size=batch)   # no consistency step: like the reference
            seconds = time.perf_counter() - t0
            facts.update(device=str(runner.device), compiled=runner.compiled)
            if runner.device.type == "cuda":
                facts["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        facts.update(seconds=seconds, seconds_per_slice=seconds / stack.shape[0],
                     slices_per_second=stack.shape[0] / seconds, peak_rss_mb=_peak_rss_mb())
        queue.put((facts, out))
    except BaseException as exc:                       # report, never hang the parent
        queue.put(({"name": name, "error": f"{type(exc).__name__}: {exc}"}, None))


PEAK_ROUNDS = 3              # repeats of the peak measurement
PEAK_SPREAD_LIMIT = 0.15     # more spread than this between repeats: the machine was busy
PEAK_SECONDS = 0.3           # each operation of each repeat runs at least this long


def _measure_peaks(device: str, queue, precisions=None) -> None:
    """Child process: the best TFLOP/s of a large matmul and a large 3x3 conv per precision
    (`precisions`, default every one the device can run)."""
    import torch

    from ..engine.devices import use_all_cores

    dev = torch.device(device)
    if dev.type == "cpu":
        use_all_cores()
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if dev.type == "cuda":
        dtypes["fp16"] = torch.float16
    if precisions:
        dtypes = {k: v for k, v in dtypes.items() if k in precisions}
    # each operation repeats until PEAK_SECONDS have passed (at least once): enough for a steady
    # figure on a fast path, and a bounded cost where a precision is emulated (bf16 without units)
    n = 8192 if dev.type == "cuda" else 1024
    peaks, rounds = {}, {}

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for label, dt in dtypes.items():
        best = 0.0
        a = torch.randn(n, n, device=dev, dtype=dt)
        b = torch.randn(n, n, device=dev, dtype=dt)
        conv = torch.nn.Conv2d(256, 256, 3, padding=1).to(dev, dt).to(memory_format=torch.channels_last)
        x = torch.randn(2 if dev.type == "cpu" else 64, 256, 64, 64, device=dev, dtype=dt)
        x = x.contiguous(memory_format=torch.channels_last)
        conv_flops = 2 * x.shape[0] * 64 * 64 * 256 * 256 * 9
        rounds[label] = []
        with torch.inference_mode():
            for _ in range(PEAK_ROUNDS):            # repeats: a disturbed machine shows as a spread
                best = 0.0
                for fn, flops in ((lambda: a @ b, 2 * n ** 3), (lambda: conv(x), conv_flops)):
                    fn()
                    sync()
                    t0, reps = time.perf_counter(), 0
                    while reps == 0 or time.perf_counter() - t0 < PEAK_SECONDS:
                        fn()
                        sync()
                        reps += 1
                    best = max(best, flops * reps / (time.perf_counter() - t0) / 1e12)
                rounds[label].append(best)
        peaks[label] = max(rounds[label])
    queue.put((peaks, rounds))


def measurement_warnings(result: dict) -> list[str]:
    """Why the figures of this run may not be trusted: a path faster than the peak measured in the
    same run, or peaks that varied across repeats (other work on the machine, frequency changes)."""
    warnings = []
    for label, values in result.get("peak_rounds", {}).items():
        # the best repeat against the median one: a single slow repeat (a warming core) is noise,
        # most repeats below the best means the machine was busy while the peak was measured
        spread = (max(values) - float(np.median(values))) / max(values) if values and max(values) > 0 else 0.0
        if spread > PEAK_SPREAD_LIMIT:
            warnings.append(f"the {label} peak varied by {100 * spread:.0f}% across {len(values)} repeats "
                            f"({', '.join(f'{v:.3f}' for v in values)} TFLOP/s)")
    for facts in result.get("paths", []):
        if (facts.get("fraction_of_peak") or 0) > 1.0:
            warnings.append(f"{facts['name']} ran at {100 * facts['fraction_of_peak']:.0f}% of the {facts['precision']} "
                            "peak measured in this run, which is impossible on an undisturbed machine")
    if warnings:
        warnings.append("the peak measurement looks disturbed: rerun `mrsuperres bench` on an otherwise idle "
                        "machine before relying on these figures")
    return warnings


def _in_child(target, *args, timeout: float = 1800, **kwargs):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue), kwargs=kwargs)
    proc.start()
    try:
        result = queue.get(timeout=timeout)
    finally:
        proc.join(timeout=60)
        if proc.is_alive():
            proc.kill()
    return result


def startup_seconds(model_spec: str | None) -> float:
    """Wall time of a fresh Python that imports the library and loads the model (what every
    `mrsuperres enhance` pays before its first slice)."""
    code = ("from MRSuperResLib.models.catalog import load_model; from MRSuperResLib.engine.calibration import make_runner; "
            f"m, _ = load_model({model_spec!r}); make_runner(m, device='cpu')")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                   cwd=PROJECT_DIR)
    return time.perf_counter() - t0


def run_bench(model_spec: str | None = None, slices: int = 36, size: tuple[int, int] = (60, 60),
              device: str = "auto", paths: list[str] | None = None, reference_slices: int | None = None,
              batch_size: int | None = None, input_path: str | None = None, log=print,
              calibrate: bool = False) -> dict:
    import torch

    from ..engine.calibration import candidates, choose, cpu_model
    from ..models.catalog import load_model
    from ..engine.devices import cpu_has_fast_bf16, select_device

    dev = select_device(device)
    model, card = load_model(model_spec)
    if paths is None:                   # the reference and every precision this device has units for
        paths = ["reference"] + candidates(dev)
    unknown = [p for p in paths if p not in PATHS]
    if unknown or "reference" not in paths:
        from ..errors import MRSuperResError
        raise MRSuperResError(f"--paths must include reference and name only {', '.join(PATHS)} (got {paths})")
    stack = bench_slices(input_path, slices, size, model.scale)
    flops = conv_flops_per_slice(model, *size)
    result = dict(date=time.strftime("%Y-%m-%d"), device=str(dev), cpu=cpu_model(),
                  cpu_bf16=cpu_has_fast_bf16(), threads=torch.get_num_threads(), torch=torch.__version__,
                  model=card.get("name", str(model_spec)), slices=slices, lr_size=list(size),
                  hr_size=[size[0] * model.scale, size[1] * model.scale],
                  gflop_per_slice=flops / 1e9, paths=[])
    if dev.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(dev)
    log(f"bench: {slices} slices {size[0]}x{size[1]} -> {result['hr_size'][0]}x{result['hr_size'][1]}, "
        f"{flops / 1e9:.1f} GFLOP per slice, model {result['model']}, {dev}")
    choice = choose(model, dev, "auto", refresh=calibrate, notify=log)
    result["auto"] = choice.as_facts()
    log(f"--precision auto here: {choice.precision} ({choice.why}{', cached' if choice.cached else ''})")
    result["startup_seconds"] = startup_seconds(model_spec)
    log(f"start-up (python + imports + model load): {result['startup_seconds']:.2f} s")
    precisions = sorted({PATHS[name][0] for name in paths})          # no peak for a precision not run
    result["peak_tflops"], result["peak_rounds"] = _in_child(_measure_peaks, str(dev), precisions=precisions)
    log("measured peak TFLOP/s: " + ", ".join(f"{k} {v:.3f}" for k, v in result["peak_tflops"].items()))
    ref_stack = stack[: reference_slices or slices]
    ref_out = None
    for name in paths:
        facts, out = _in_child(_run_path, name, model_spec, ref_stack if name == "reference" else stack,
                               str(dev), batch_size)
        if out is None:
            log(f"{name:>14}: failed ({facts.get('error')})")
            result["paths"].append(facts)
            continue
        if name == "reference":
            ref_out = out
        facts["tflops"] = flops * facts["slices_per_second"] / 1e12
        peak = result["peak_tflops"].get(facts["precision"])
        facts["fraction_of_peak"] = facts["tflops"] / peak if peak else None
        n = min(len(ref_out), len(out))
        facts["psnr_vs_fp32"] = psnr(out[:n], ref_out[:n])
        facts["speedup_vs_reference"] = result["paths"][0]["seconds_per_slice"] / facts["seconds_per_slice"] \
            if result["paths"] else 1.0
        result["paths"].append(facts)
        log(format_row(facts))
    result["warnings"] = measurement_warnings(result)
    for line in result["warnings"]:
        log(f"warning: {line}")
    return result


def format_row(f: dict) -> str:
    fraction = f.get("fraction_of_peak")
    frac = ("peak n/a" if not fraction else f"{100 * fraction:.0f}% of peak" if fraction <= 1.0
            else "above the measured peak: disturbed")
    gpu = f", GPU peak {f['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in f else ""
    return (f"{f['name']:>14}: {f['seconds_per_slice']:.3f} s/slice, {f['slices_per_second']:.2f} slices/s, "
            f"{f['tflops']:.3f} TFLOP/s ({frac}), x{f['speedup_vs_reference']:.2f} vs reference, "
            f"PSNR vs fp32 {f['psnr_vs_fp32']:.1f} dB, peak RSS {f['peak_rss_mb']:.0f} MB{gpu}")


def write_json(result: dict, path: str | Path) -> Path:
    from ..files import atomic_write_bytes

    return atomic_write_bytes(path, json.dumps(result, indent=2).encode())


SWEEP_SIZES = (60, 96, 128)      # typical LR slices at x4: 240 to 512 pixels out
SWEEP_BATCHES = (1, 2, 4, 8)


def sweep_batches(model_spec: str | None = None, device: str = "auto", sizes=SWEEP_SIZES, batches=SWEEP_BATCHES,
                  log=print) -> dict:
    """Seconds per slice against batch size and slice size for the path `--precision auto` chose
    here, with the fraction of the measured peak of its precision: whether a larger batch would
    reach more of the machine than the one the calibration picked."""
    from ..engine.calibration import choose
    from ..models.catalog import load_model
    from ..engine.devices import select_device, use_all_cores
    from ..engine.slices import SliceEngine

    dev = select_device(device)
    if dev.type == "cpu":
        use_all_cores()
    model, card = load_model(model_spec)
    choice = choose(model, dev, "auto", notify=log)
    peaks, rounds = _in_child(_measure_peaks, str(dev), precisions=[choice.precision])
    peak = peaks[choice.precision]
    runner = SliceEngine(model, device=dev, notify=lambda t: None, choice=choice)
    label = f"{choice.engine} {choice.precision}"
    log(f"sweep: {label} (the path --precision auto uses here), {choice.precision} peak {peak:.3f} TFLOP/s")
    rows = []
    for side in sizes:
        stack = bench_slices(None, max(batches), (side, side), model.scale)
        flops = conv_flops_per_slice(model, side, side)
        runner.forward(stack[:1])                              # warm-up at this size
        for b in batches:
            t0 = time.perf_counter()
            runner.forward(stack[:b])
            seconds = (time.perf_counter() - t0) / b
            row = dict(lr_size=side, batch=b, seconds_per_slice=seconds,
                       fraction_of_peak=flops / seconds / 1e12 / peak)
            rows.append(row)
            log(f"  {side:>4}x{side:<4} batch {b}: {seconds:.3f} s/slice, {100 * row['fraction_of_peak']:.0f}% of peak")
    return dict(path=label, peak_tflops=peak, peak_rounds=rounds[choice.precision],
                chosen_batch_pixels=choice.batch_pixels, rows=rows)
