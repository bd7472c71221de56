"""A stack of slices through a SliceEngine: batches sized to memory, constant slices run once,
tiles for large slices, the out-of-memory back-off (halve the batch, then the tile, then leave the
GPU), the pipeline's consistency step per batch (`hold`), and the geometric self-ensemble with its
spread."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..errors import Cancelled, MRSuperResError
from . import working_range
from .limits import LR_PIXELS_PER_BATCH, MIN_SLICE, MIN_TILE, TILE_CONTEXT, ProgressCallback, check_slice_size

Hold = Callable[[np.ndarray, np.ndarray], np.ndarray]    # (output batch, input batch) -> array

def _is_cancelled(cancel) -> bool:
    if cancel is None:
        return False
    return bool(cancel.is_set() if hasattr(cancel, "is_set") else cancel())


def _is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return (isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate" in text
            or "bad_alloc" in text)                      # OpenVINO's CPU plugin


def constant_slices(stack: np.ndarray) -> dict[float, np.ndarray]:
    """{value: indices} of the slices whose voxels all hold one value (blank air slices)."""
    flat = stack.reshape(stack.shape[0], -1)
    lo, hi = flat.min(1), flat.max(1)
    groups: dict[float, list[int]] = {}
    for i in np.flatnonzero(lo == hi):
        groups.setdefault(float(lo[i]), []).append(int(i))
    return {v: np.array(ix) for v, ix in groups.items() if len(ix) > 1}


def run_slices(runner, stack: np.ndarray, *, batch_size: int | None = None, tile: int | None = None,
               progress: ProgressCallback | None = None, cancel=None, out: np.ndarray | None = None,
               self_ensemble: bool = False, hold: Hold | None = None, spread: np.ndarray | None = None,
               residual: np.ndarray | None = None, departure: Hold | None = None,
               ceiling: float | None = None) -> np.ndarray:
    """(N, h, w) float32 in [0, 1] -> (N, h s, w s) float32 clipped to [0, 1].

    `tile` (LR pixels) cuts each slice into overlapping tiles; by default slices larger than
    the per-pass budget are tiled. `cancel` is a threading.Event or a callable returning True
    to stop (raises Cancelled); `progress(done, total)` is called after every batch. `out`, if
    given, receives the result (so callers can stream into their own buffer). `self_ensemble`
    averages the outputs for the 8 flips and rotations of each slice (8x the time); `spread`, if
    given with it, receives their voxel-wise standard deviation (the uncertainty map).
    `hold(output, input)` holds each batch's output to its input (the pipeline's consistency step,
    resolved once for the run; None: as the network made it);
    `residual`, an (N, h, w) array, receives `departure(output, input)`, the network's own departure
    from the input before that step (the consistency map, what the step corrects).
    `ceiling`: the level the network's 1 stands for (working_range; default: the stack's own);
    `hold` and `departure` see the batch as the network does, their results come back in the
    stack's units.
    """
    if residual is not None and departure is None:
        raise MRSuperResError("a residual needs the departure that fills it")
    c = working_range.ceiling(stack) if ceiling is None else float(ceiling)
    if self_ensemble:
        return _self_ensemble(runner, stack, out, progress, spread, residual,
                              dict(batch_size=batch_size, tile=tile, cancel=cancel, hold=hold, departure=departure,
                                   ceiling=c))
    if spread is not None:
        raise MRSuperResError("the uncertainty map is the spread of the 8 self-ensemble passes: it needs self_ensemble")
    if batch_size is not None and batch_size < 1:
        raise MRSuperResError(f"batch size must be at least 1, not {batch_size}")
    if tile is not None and tile < MIN_SLICE:
        raise MRSuperResError(f"tile size must be at least {MIN_SLICE} LR pixels, not {tile}")
    n, h, w = stack.shape
    s = runner.scale
    check_slice_size(h, w)
    if out is None:
        out = np.empty((n, h * s, w * s), dtype=np.float32)
    if tile is None and h * w > LR_PIXELS_PER_BATCH:
        tile = int(np.sqrt(LR_PIXELS_PER_BATCH)) - 2 * TILE_CONTEXT
    tile_px = min(tile + 2 * TILE_CONTEXT, h) * min(tile + 2 * TILE_CONTEXT, w) if tile else h * w
    budget = min(LR_PIXELS_PER_BATCH, runner.choice.batch_pixels or LR_PIXELS_PER_BATCH)   # measured, in memory
    batch = batch_size or max(1, budget // tile_px)
    first_choice = (batch, tile)

    # constant slices: one representative each, copied afterwards (exact)
    copies = constant_slices(stack)
    skip = np.zeros(n, dtype=bool)
    for ix in copies.values():
        skip[ix[1:]] = True
    todo = np.flatnonzero(~skip)

    done = 0
    if progress:
        progress(0, n)
    while done < len(todo):
        if _is_cancelled(cancel):
            raise Cancelled()
        chunk = todo[done:done + batch]
        try:
            x, excess = working_range.split(stack[chunk] if len(chunk) > 1 else stack[chunk[0]][None], c)
            y = runner.forward_tiled(x, tile) if tile else runner.forward(x)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _is_out_of_memory(exc):
                raise
            if runner.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(chunk) > 1:                       # 1. halve the batch
                batch = max(1, len(chunk) // 2)
            elif (tile or max(h, w)) > MIN_TILE:     # 2. halve the tile
                tile = max(MIN_TILE, (tile or max(h, w)) // 2)
            elif runner.device.type == "cuda":       # 3. leave the GPU
                runner.fall_back_to_cpu(f"out of memory even for one {MIN_TILE}x{MIN_TILE} tile")
                batch, tile = first_choice               # the CPU has its own, larger memory
            else:
                raise MRSuperResError(f"out of memory on the CPU even for one {MIN_TILE}x{MIN_TILE} tile "
                                      "of a slice: free memory or close other programs") from None
            continue
        if residual is not None:
            residual[chunk] = departure(y, x) * np.float32(c)
        out[chunk] = working_range.join(hold(y, x) if hold is not None else y, excess, c, s)
        done += len(chunk)
        if progress:
            progress(int(done + skip[: chunk[-1] + 1].sum()), n)
    for ix in copies.values():
        out[ix[1:]] = out[ix[0]]
        if residual is not None:
            residual[ix[1:]] = residual[ix[0]]
    if progress:
        progress(n, n)
    return out


# the 8 symmetries of the square: k quarter turns, then a left-right flip or not
SYMMETRIES = [(k, flip) for k in range(4) for flip in (False, True)]


def _self_ensemble(runner, stack: np.ndarray, out: np.ndarray | None,
                   progress: ProgressCallback | None, spread: np.ndarray | None, residual: np.ndarray | None,
                   options: dict) -> np.ndarray:
    """Geometric self-ensemble (EDSR's "+"): super-resolve each of the 8 flips/rotations of the
    slices, map every result back and average. The network is not exactly equivariant, so its
    errors partly cancel: the fidelity model gains PSNR at 8x the time. Where the 8 disagree the
    output depends on how the slice happened to be oriented: their standard deviation goes to
    `spread` (Welford's running update, exact in float32 for an equivariant network: zero)."""
    n, h, w = stack.shape
    s = runner.scale
    if out is None:
        out = np.zeros((n, h * s, w * s), dtype=np.float32)
    else:
        out[...] = 0
    if spread is not None:
        spread[...] = 0                       # holds the sum of squared deviations until the end
    if residual is not None:
        residual[...] = 0
    for i, (k, flip) in enumerate(SYMMETRIES):
        x = np.rot90(stack, k, axes=(1, 2))
        x = np.ascontiguousarray(x[:, :, ::-1] if flip else x)
        step = None if progress is None else (
            lambda done, total, i=i: progress((i * total + done) // len(SYMMETRIES), total))
        one = None if residual is None else np.empty(x.shape, np.float32)
        y = run_slices(runner, x, progress=step, residual=one, **options)
        y = np.rot90(y[:, :, ::-1] if flip else y, -k, axes=(1, 2))
        if residual is not None:
            residual += np.rot90(one[:, :, ::-1] if flip else one, -k, axes=(1, 2)) * np.float32(1 / len(SYMMETRIES))
        # Welford, in place on this pass's own buffer: y becomes delta / k, the mean moves by it,
        # and the sum of squared deviations grows by delta^2 (k - 1) / k = (delta / k)^2 k (k - 1)
        k = i + 1
        y -= out
        y *= np.float32(1 / k)
        out += y
        if spread is not None:
            np.square(y, out=y)
            y *= np.float32(k * (k - 1))
            spread += y
        del y
    if spread is not None:
        spread *= np.float32(1 / len(SYMMETRIES))
        np.sqrt(spread, out=spread)
    return out
