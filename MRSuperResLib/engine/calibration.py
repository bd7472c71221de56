"""`precision="auto"` chosen by measuring on this machine, not by reading CPU flags.

CPU flags mislead: a CPU with AVX-512 bf16 but no AMX can run bf16 convolutions slower than
fp32 (one 2-core Xeon: 0.140 against 0.249 TFLOP/s), and a CPU without bf16 units emulates them
about 8x slower. So the first time a network architecture runs on a machine, each precision
the device has units for is timed on a few batches of real MRI slices and checked against fp32;
the fastest that agrees to ACCURACY_DB wins, with the batch (one slice per pass, or several)
that ran it fastest. The choice is cached in the user's cache folder,
keyed by the machine (CPU model, usable cores, torch version, device) and the architecture; a
cache that is unreadable, of another version or of another machine is measured again, never
trusted, and so is an entry that breaks the schema (`entry_problem`): a well-formed but wrong
entry otherwise failed or misreported every run. `mrsuperres bench --calibrate` measures again on
purpose.
"""
from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import fields

import numpy as np
import torch

from ..errors import MRSuperResError
from ..files import atomic_write_bytes
from ..options import ENGINES, PRECISIONS, SAMPLE_VOLUME, home_dir
from .choice import Choice, label_of, split
from .devices import cpu_has_fast_bf16, resolve_precision, select_device, usable_cores
from .limits import ACCURACY_DB
from . import openvino
from .slices import SliceEngine

CACHE_VERSION = 1
CALIBRATION_SLICE = (60, 60)     # LR pixels: a typical MRI slice at x4 (240x240 out)
CALIBRATION_BATCH = 4            # slices per timed batch
CALIBRATION_REPEATS = 2          # timed batches per path, after one untimed warm-up


def candidates(device: torch.device) -> list[str]:
    """The precisions worth timing on `device`: fp32 always, bf16 where the CPU has bf16 units
    (emulated bf16 is never faster), and on CUDA fp16 and bf16 where the GPU supports it."""
    if device.type == "cuda":
        return ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    return ["fp32"] + (["bf16"] if cpu_has_fast_bf16() else [])


def paths(device: torch.device) -> list[str]:
    """Every way to run here, as labels: a torch precision ("fp32", "bf16", "fp16"), or
    "openvino-<precision>" on the CPU where OpenVINO is installed (and MRSUPERRES_ENGINES allows it)."""
    labels = list(candidates(device))
    if device.type == "cpu" and "openvino" in openvino.allowed_engines():
        labels += [label_of("openvino", p) for p in candidates(device) if p in openvino.HINTS]
    return labels


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key(device: torch.device, model, options: list[str]) -> dict:
    """What measuring `options` depends on; any change means measuring again."""
    key = {"cpu": cpu_model(), "cores": usable_cores(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "device": device.type,
           "architecture": {"scale": model.scale, **model.config}, "candidates": options}
    if any(label.startswith("openvino") for label in options):
        from importlib.metadata import version
        key["openvino"] = version("openvino")
    if device.type == "cuda":
        key["gpu"] = torch.cuda.get_device_name(device)
    return key


def cache_path():
    return home_dir() / "calibration.json"


def read_cache() -> list[dict]:
    """The cached entries, or none when the file is missing, unreadable or of another version."""
    try:
        data = json.loads(cache_path().read_text())
        if data.get("version") == CACHE_VERSION and isinstance(data.get("entries"), list):
            return [e for e in data["entries"] if isinstance(e, dict) and "key" in e and "choice" in e]
    except (OSError, ValueError, AttributeError):
        pass
    return []


def write_cache(key: dict, choice: Choice) -> None:
    """Add or replace this machine's entry; a cache that cannot be written costs a measurement
    next time, never a failed run."""
    entries = [e for e in read_cache() if e["key"] != key]
    entries.append({"key": key, "choice": choice.as_facts(), "date": time.strftime("%Y-%m-%d %H:%M")})
    try:
        cache_path().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache_path(), json.dumps({"version": CACHE_VERSION, "entries": entries}, indent=1).encode())
    except OSError:
        pass


def entry_problem(choice, options: list[str]) -> str | None:
    """What is wrong with a cached choice, or None: the fields and types of a Choice, values from
    options.py's lists, and a way to run among `options` (this device's paths, narrowed to the
    precision and engine asked for), so a cached entry never runs what the device cannot (fp16 on a
    CPU, bf16 without units, OpenVINO off the CPU) nor what the user did not ask for."""
    if not isinstance(choice, dict):
        return "not a record"
    unknown = sorted(set(choice) - {f.name for f in fields(Choice)})
    if unknown:
        return f"unknown field '{unknown[0]}'"
    precision, engine = choice.get("precision"), choice.get("engine", "torch")
    if precision not in PRECISIONS or precision == "auto":
        return f"precision {precision!r} is none of {', '.join(p for p in PRECISIONS if p != 'auto')}"
    if engine not in ENGINES or engine == "auto":
        return f"engine {engine!r} is none of {', '.join(e for e in ENGINES if e != 'auto')}"
    if label_of(engine, precision) not in options:
        return f"{label_of(engine, precision)} is not among the ways to run here"
    if not isinstance(choice.get("why"), str):
        return "no reason recorded"
    batch = choice.get("batch_pixels")
    if batch is not None and (type(batch) is not int or batch < 1):
        return f"batch_pixels {batch!r} is not a positive whole number"
    measured = choice.get("measured", {})
    number = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))
    if not isinstance(measured, dict) or not all(
            isinstance(m, dict) and number(m.get("seconds_per_slice")) and number(m.get("psnr_vs_fp32"))
            for m in measured.values()):
        return "unreadable measurements"
    return None


def measure(model, device: torch.device, labels: list[str], strict: bool = False) -> dict:
    """{path label: {"seconds_per_slice", "psnr_vs_fp32"}} on CALIBRATION_BATCH real MRI slices;
    torch fp32 is always run, as the reference. A path that fails is recorded as failed, unless
    `strict` (an engine asked for by name), when its error is raised."""
    stack = bench_slices(None, CALIBRATION_BATCH, CALIBRATION_SLICE, model.scale)
    results, reference = {}, None
    for label in ["fp32"] + [p for p in labels if p != "fp32"]:
        engine_name, precision = split(label)
        try:
            runner = SliceEngine(model, device=device, precision=precision, engine=engine_name,
                                 notify=lambda text: None)   # resolved: this is the measurement
            out = runner.forward(stack)                      # warm-up (and the output to compare)
        except Exception as exc:                             # an optional path that cannot run is no choice
            if label == "fp32" or strict:
                raise
            results[label] = {"seconds_per_slice": float("inf"), "psnr_vs_fp32": float("-inf"),
                              "error": f"{type(exc).__name__}: {exc}"[:200]}
            continue
        t0 = time.perf_counter()
        for _ in range(CALIBRATION_REPEATS):
            runner.forward(stack)
        batched = (time.perf_counter() - t0) / (CALIBRATION_REPEATS * len(stack))
        t0 = time.perf_counter()                             # one slice per pass: faster on some CPUs
        for i in range(len(stack)):
            runner.forward(stack[i:i + 1])
        single = (time.perf_counter() - t0) / len(stack)
        if reference is None:
            reference = out
        results[label] = {"seconds_per_slice": min(batched, single),
                          "batch": 1 if single < batched else len(stack),
                          "psnr_vs_fp32": float(psnr(out, reference))}
    return results


def pick(measured: dict, among: list[str] | None = None) -> tuple[str, str]:
    """(path label, why): the fastest of `among` (default: all measured) that agrees with fp32 to
    ACCURACY_DB; torch fp32 on a tie."""
    agreeing = {p: m for p, m in measured.items()
                if m["psnr_vs_fp32"] >= ACCURACY_DB and (among is None or p in among)}
    if not agreeing:                      # only where every asked-for path is inaccurate
        raise MRSuperResError(f"no way to run {', '.join(among or measured)} here agrees with fp32 to "
                              f"{ACCURACY_DB:g} dB; try --precision fp32")
    best = min(agreeing, key=lambda p: (agreeing[p]["seconds_per_slice"], p != "fp32"))
    figures = ", ".join(f"{p} {m['seconds_per_slice']:.3g} s/slice ({m['psnr_vs_fp32']:.0f} dB)"
                        if p != "fp32" else f"fp32 {m['seconds_per_slice']:.3g} s/slice"
                        for p, m in measured.items() if "error" not in m)
    inaccurate = [p for p, m in measured.items() if p not in agreeing and "error" not in m]
    failed = [p for p, m in measured.items() if "error" in m]
    note = (f"; {', '.join(inaccurate)} below {ACCURACY_DB:g} dB against fp32" if inaccurate else "") + \
        (f"; {', '.join(failed)} failed to run" if failed else "")
    return best, f"fastest measured here: {figures}{note}"


def choose(model, device: torch.device, precision: str = "auto", refresh: bool = False,
           notify=None, engine: str = "auto") -> Choice:
    """How `model` runs on `device`: the precision and engine asked for, or the measured fastest."""
    if engine not in ENGINES:
        raise MRSuperResError(f"unknown engine '{engine}' ({', '.join(ENGINES)})")
    if engine == "openvino":
        openvino.check_device(device)
        if not openvino.available():
            raise MRSuperResError("the OpenVINO engine is not installed: pip install 'mrsuperres[openvino]'")
    if precision != "auto":
        precision = resolve_precision(precision, device)
        if engine != "auto":
            return Choice(precision, "asked for", engine=engine)
    options = [label for label in paths(device)
               if (precision == "auto" or split(label)[1] == precision)
               and (engine == "auto" or split(label)[0] == engine)]
    if engine == "openvino" and not options:          # asked for; bf16 without units is still allowed
        return Choice("fp32" if precision == "auto" else precision, "asked for", engine="openvino")
    if len(options) <= 1:
        label = options[0] if options else precision
        if precision != "auto" and engine == "auto":
            reason = "asked for"
        elif device.type == "cpu":
            reason = "the CPU has no bf16 units (bf16 would be emulated, several times slower)"
        else:
            reason = "the only precision here"
        return Choice(split(label)[1], reason, engine=split(label)[0])
    key = machine_key(device, model, options)
    problem = None
    for entry in [] if refresh else read_cache():
        if entry["key"] == key:
            problem = entry_problem(entry["choice"], options)
            if problem is None:
                return Choice(**{**entry["choice"], "cached": True})
    if notify and problem:
        notify(f"the cached calibration for this machine is invalid ({problem}); timing "
               f"{', '.join(options)} again to choose the fastest")
    elif notify:
        notify(f"timing {', '.join(options)} on this machine to choose the fastest (once per model "
               "architecture; `mrsuperres bench --calibrate` repeats it)")
    measured = measure(model, device, options, strict=engine != "auto")
    best, why = pick(measured, options)
    batch = measured[best].get("batch")
    choice = Choice(split(best)[1], f"{why}; {batch} slice{'s' if batch != 1 else ''} per pass" if batch else why,
                    measured, engine=split(best)[0],
                    batch_pixels=batch * CALIBRATION_SLICE[0] * CALIBRATION_SLICE[1] if batch else None)
    write_cache(key, choice)
    return choice


def make_runner(model, device="auto", precision: str = "auto", engine: str = "auto", compile: bool = False,
                notify=None, refresh: bool = False) -> SliceEngine:
    """A SliceEngine for `model` on `device`, at the precision and engine asked for or, for "auto",
    the measured fastest (`choose`); after a CUDA out-of-memory it runs on the CPU as chosen there."""
    dev = device if isinstance(device, torch.device) else select_device(device)
    say = notify or (lambda text: print(f"mrsuperres: {text}", file=sys.stderr))
    choice = choose(model, dev, precision, refresh=refresh, notify=say, engine=engine)

    def rechoose(net, cpu):
        """After a CUDA out-of-memory: on the CPU as asked where it can run there (fp16 cannot)."""
        try:
            asked = precision if (precision or "auto") == "auto" else resolve_precision(precision, cpu)
        except MRSuperResError:
            asked = "auto"
        return choose(net, cpu, asked, notify=say, engine=engine)

    return SliceEngine(model, device=dev, compile=compile, notify=say, choice=choice, rechoose=rechoose)


def seconds_per_output_voxel(runner: SliceEngine) -> float:
    """This runner's cost per output voxel: the calibration's figure for the path it runs where
    there is one (no extra work), else timed on one 256 x 256-output slice after a warm-up."""
    measured = runner.choice.measured.get(label_of(runner.engine, runner.precision)) or {}
    if 0 < measured.get("seconds_per_slice", float("inf")) < float("inf"):
        return measured["seconds_per_slice"] / (CALIBRATION_SLICE[0] * CALIBRATION_SLICE[1] * runner.scale ** 2)
    side = max(16, 256 // runner.scale)
    x = np.full((1, side, side), 0.5, np.float32)
    runner.forward(x)
    t0 = time.perf_counter()
    runner.forward(x)
    return (time.perf_counter() - t0) / (side * runner.scale) ** 2


def bench_slices(path: str | None, count: int, size: tuple[int, int], scale: int) -> np.ndarray:
    """`count` LR slices of real MRI, (count, h, w) float32 in [0, 1]: axial slices of `path`
    (default: the bundled Colin27 slab) padded square, resized to the HR size, then degraded
    by Rashid et al.'s bilinear x`scale`. What calibration and the benchmark time."""
    from skimage.transform import resize

    from ..scans.resample import downsample
    from ..scans.volumes import normalise, read_volume

    data = normalise(read_volume(path or SAMPLE_VOLUME).data)
    picks = np.resize(np.arange(data.shape[2]), count)
    hr_size = (size[0] * scale, size[1] * scale)
    hr = []
    for k in picks:
        s = data[:, :, k]
        side = max(s.shape)
        square = np.zeros((side, side), np.float32)
        y0, x0 = (side - s.shape[0]) // 2, (side - s.shape[1]) // 2
        square[y0:y0 + s.shape[0], x0:x0 + s.shape[1]] = s
        hr.append(resize(square, hr_size, order=3, anti_aliasing=True).astype(np.float32))
    return np.clip(downsample(np.clip(np.stack(hr), 0, 1), scale, "bilinear"), 0, 1).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two [0, 1] arrays, in dB (inf when equal): how well a fast path agrees with fp32."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)
