"""Running the generator over slices, and over whole volumes with exact geometry.

Volume in -> per-volume min-max to [0, 1] -> slices perpendicular to the axis, in batches,
through the network -> clipped to [0, 1] -> back to the input's intensity units -> volume out
on the HR grid of `geometry.resample_affine`. fp32 is the reference path; `precision` leaves
room for the faster ones.
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from . import geometry
from .errors import Cancelled, MRSuperResError
from .rrdbnet import RRDBNet
from .volumes import Volume, check_voxels, intensity_range

MIN_SLICE = 8                    # smallest in-plane LR size (voxels) the network is run on
LR_PIXELS_PER_BATCH = 1 << 15    # slices per batch = this / (h * w): bounds activation memory

ProgressCallback = Callable[[int, int], None]   # (slices done, slices in all)


def select_device(device: str = "auto") -> torch.device:
    """`auto` = CUDA when present, else CPU; asking for CUDA without a GPU is an error."""
    device = (device or "auto").lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device in ("gpu", "cuda") or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise MRSuperResError("--device cuda was asked for, but PyTorch sees no CUDA GPU here "
                                  "(use --device cpu or auto)")
        return torch.device("cuda" if device == "gpu" else device)
    if device == "cpu":
        return torch.device("cpu")
    raise MRSuperResError(f"unknown device '{device}' (auto, cpu or cuda)")


def autocast(device: torch.device, precision: str):
    """The autocast context for `precision` (fp32: none); fp16 is refused on the CPU."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        raise MRSuperResError(f"unknown precision '{precision}' (fp32, bf16 or fp16)")
    if precision == "fp16" and device.type == "cpu":
        raise MRSuperResError("fp16 runs on CUDA GPUs; on the CPU use bf16 (fast where the CPU has it) or fp32")
    return torch.autocast(device.type, dtype=dtype)


def _is_cancelled(cancel) -> bool:
    if cancel is None:
        return False
    return bool(cancel.is_set() if hasattr(cancel, "is_set") else cancel())


def _is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate" in text


def super_resolve_slices(model: RRDBNet, stack: np.ndarray, *, device: str | torch.device = "auto",
                         batch_size: int | None = None, precision: str = "fp32",
                         progress: ProgressCallback | None = None, cancel=None) -> np.ndarray:
    """(N, h, w) float32 in [0, 1] -> (N, h s, w s) float32 clipped to [0, 1].

    `cancel` is a threading.Event or a callable returning True to stop (raises Cancelled);
    `progress(done, total)` is called after every batch. On CUDA out-of-memory the batch is
    halved and retried (CPU allocation failures too).
    """
    device = device if isinstance(device, torch.device) else select_device(device)
    if batch_size is not None and batch_size < 1:
        raise MRSuperResError(f"batch size must be at least 1, not {batch_size}")
    n, h, w = stack.shape
    s = model.scale
    if min(h, w) < MIN_SLICE:
        raise MRSuperResError(f"slices of {h}x{w} voxels are smaller than the {MIN_SLICE}x{MIN_SLICE} "
                              "the network needs (is another --axis the slice axis?)")
    multiple = model.input_multiple
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    out = np.empty((n, h * s, w * s), dtype=np.float32)
    batch = batch_size or max(1, LR_PIXELS_PER_BATCH // (h * w))
    model = model.to(device).eval()
    start = 0
    if progress:
        progress(0, n)
    while start < n:
        if _is_cancelled(cancel):
            raise Cancelled()
        stop = min(n, start + batch)
        x = torch.from_numpy(np.ascontiguousarray(stack[start:stop], dtype=np.float32))[:, None]
        try:
            with torch.inference_mode(), autocast(device, precision):
                x = x.to(device)
                if pad_h or pad_w:
                    x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
                y = model(x)[:, 0, : h * s, : w * s].float()
                if not torch.isfinite(y).all():
                    raise MRSuperResError("the model produced NaN or infinite values (broken weights, or "
                                          "overflow: try --precision fp32)")
                out[start:stop] = y.clamp_(0, 1).cpu().numpy()
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _is_out_of_memory(exc):
                raise
            if batch == 1:
                raise MRSuperResError(f"out of memory on {device} even for a single {h}x{w} slice; "
                                      "use --device cpu") from None
            batch = max(1, (stop - start) // 2)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        start = stop
        if progress:
            progress(start, n)
    return out


def enhance_volume(volume: Volume, model: RRDBNet, *, axis: str | int = "auto",
                   device: str = "auto", batch_size: int | None = None, precision: str = "fp32",
                   progress: ProgressCallback | None = None, cancel=None) -> tuple[Volume, dict]:
    """Super-resolve a volume slice by slice; returns (HR volume in input units, run facts)."""
    data = check_voxels(volume.data, volume.meta.get("path", "volume"))
    ax = geometry.choose_axis(axis, volume.affine, data.shape)
    lo, hi = intensity_range(data)
    stack = geometry.slices_first(data, ax)
    t0 = time.perf_counter()
    normalised = (stack - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    sr = super_resolve_slices(model, normalised, device=device, batch_size=batch_size,
                              precision=precision, progress=progress, cancel=cancel)
    sr *= np.float32(hi - lo)
    sr += np.float32(lo)
    hr = volume.regridded(geometry.slices_back(sr, ax), ax, model.scale)
    facts = dict(axis=ax, axis_name=geometry.AXIS_NAMES[ax], scale=model.scale,
                 input_shape=list(data.shape), output_shape=list(hr.data.shape),
                 intensity_range=[lo, hi], seconds=time.perf_counter() - t0, slices=stack.shape[0],
                 device=str(select_device(device)), precision=precision)
    return hr, facts
