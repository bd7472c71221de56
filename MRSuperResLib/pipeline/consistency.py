"""Data consistency: holding the network's output to the scan it was made from, and showing where
it departs from it.

Acquisition model (the footprint): each input voxel measured the mean of the output over the
s x s output pixels it covers, a box. Why a box and not the protocol's kernel: a real scan's
kernel is not known (k-space truncation, the scanner's filters, the slice profile), the box is
the partial-volume model of a voxel that holds for any of them, and a kernel taken from the test
protocol (bilinear, k-space) would tune the tool to the benchmark. On simulated data made with
another kernel the map therefore also shows that kernel's mismatch; docs/consistency.md measures
it.

One mechanism, three steps (`STEPS`), applied to every batch of network output:
- "anchor": the output's local brightness is held to the input's (a smooth gain, see
  `anchor_to_input`); detail within a voxel moves freely, so the box average is close to the
  input but not equal.
- "exact": the output is projected onto the outputs whose box average equals the input and
  that stay in [0, 1] (`project_exact`): re-acquired, it is the input.
- "none": the network's output as it is.
"auto" (the default) is the step the model's card names (`for_model`), else "anchor": a model
whose network already re-acquires close to a box (the supersampled x2) gains more from "exact".
The residual (`residual`) is what the map shows: re-acquired output minus input, at input
resolution; `summarise` gives the per-volume numbers.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ..options import CONSISTENCY_DEFAULT, CONSISTENCY_FALLBACK, CONSISTENCY_MODES, CONSISTENCY_STEPS

# the names this module has always used for them (declared once, in options)
DEFAULT, FALLBACK, MODES, STEPS = CONSISTENCY_DEFAULT, CONSISTENCY_FALLBACK, CONSISTENCY_MODES, CONSISTENCY_STEPS

SIGNAL = 0.02                    # of the input's range: voxels above it count in the per-volume numbers
THRESHOLD = 0.02                 # of the input's range: a residual above this is counted as a departure
ANCHOR_SIGMA = 1.0               # LR pixels: the Gaussian over which output and input brightness must agree
ANCHOR_FLOOR = 1e-4              # of the [0, 1] range, added to both sides: keeps the ratio finite in air
ANCHOR_MAX_GAIN = 4.0            # the anchor brightens or darkens by at most this factor
EXACT_STEPS = 40                 # bisection steps for blocks that touch 0 or 1 (2^-40 of the range)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"consistency must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def for_model(mode: str, model) -> str:
    """The step to apply: `mode`, or for "auto" the one `model`'s card names (chosen when it was
    shipped, by measurement: docs/consistency.md), else FALLBACK."""
    if check_mode(mode) != "auto":
        return mode
    named = (getattr(model, "card", None) or {}).get("consistency")
    return named if named in STEPS else FALLBACK


def _scale_of(sr: np.ndarray, lr: np.ndarray) -> int:
    n, h, w = lr.shape
    s = sr.shape[1] // h
    if s < 1 or sr.shape != (n, h * s, w * s):
        raise ValueError(f"output {sr.shape} is not an integer upscaling of input {lr.shape}")
    return s


def reacquire(sr: np.ndarray, scale: int) -> np.ndarray:
    """(N, h s, w s) -> (N, h, w): the output measured again, each voxel the mean of its box."""
    out = torch.from_numpy(np.ascontiguousarray(sr, dtype=np.float32))[:, None]
    return F.avg_pool2d(out, scale)[:, 0].numpy()


def residual(sr: np.ndarray, lr: np.ndarray) -> np.ndarray:
    """Re-acquired output minus input, at the input's resolution (positive: the output is brighter
    there than what was measured). Same units as the two arrays."""
    return reacquire(sr, _scale_of(sr, lr)) - lr.astype(np.float32, copy=False)


def on_output_grid(lr_map: np.ndarray, scale: int) -> np.ndarray:
    """An input-resolution map shown on the output grid: each output pixel carries the value of the
    input voxel it lies in (nearest, so the map shows the footprint it was measured on)."""
    return np.repeat(np.repeat(lr_map, scale, axis=1), scale, axis=2)


def apply(sr: np.ndarray, lr: np.ndarray, mode: str) -> np.ndarray:
    """The post-step `mode` on a batch: (N, h s, w s) output and (N, h, w) input, both in [0, 1]."""
    if mode not in STEPS:
        raise ValueError(f"consistency step must be one of {', '.join(STEPS)}, not {mode!r} (for_model resolves auto)")
    if mode == "anchor":
        return anchor_to_input(sr, lr)
    if mode == "exact":
        return project_exact(sr, lr)
    return sr


def anchor_to_input(sr: np.ndarray, lr: np.ndarray) -> np.ndarray:
    """Rescale the network's output so that, seen at the input's resolution, it is as bright as
    the input: each output pixel is multiplied by the ratio of the input to the output's box
    average, both smoothed by a Gaussian of ANCHOR_SIGMA input pixels (the ratio is capped at
    ANCHOR_MAX_GAIN either way and upsampled bilinearly). The network still adds detail and moves
    intensity within about an input voxel, but cannot brighten or darken a region, and air the
    network makes exactly 0 stays 0. Why: the MRI models darken a scan's faint noise floor by a
    third (docs/anchoring.md), which costs SSIM on noisy scans."""
    from scipy.ndimage import gaussian_filter

    s = _scale_of(sr, lr)
    out = torch.from_numpy(np.ascontiguousarray(sr, dtype=np.float32))[:, None]
    seen = F.avg_pool2d(out, s)[:, 0].numpy()
    ratio = ((gaussian_filter(lr.astype(np.float32), (0, ANCHOR_SIGMA, ANCHOR_SIGMA)) + ANCHOR_FLOOR)
             / (gaussian_filter(seen, (0, ANCHOR_SIGMA, ANCHOR_SIGMA)) + ANCHOR_FLOOR))
    gain = torch.from_numpy(np.clip(ratio, 1 / ANCHOR_MAX_GAIN, ANCHOR_MAX_GAIN).astype(np.float32))[:, None]
    gain = F.interpolate(gain, scale_factor=s, mode="bilinear", align_corners=False)
    return (out * gain).clamp_(0, 1)[:, 0].numpy()


def project_exact(sr: np.ndarray, lr: np.ndarray) -> np.ndarray:
    """The nearest output (least squares) whose box average over every input voxel equals that
    voxel and whose values stay in [0, 1]: each box is shifted by one constant t, clipped, with t
    such that the clipped box's mean is the input (the projection onto a hyperplane within a box
    has this form). Where nothing clips, t is the mean residual: back-projection of the residual
    with the box footprint. Blocks that clip find t by bisection (EXACT_STEPS steps)."""
    s = _scale_of(sr, lr)
    n, h, w = lr.shape
    blocks = (np.asarray(sr, dtype=np.float32).reshape(n, h, s, w, s).transpose(0, 1, 3, 2, 4)
              .reshape(-1, s * s))
    target = lr.reshape(-1).astype(np.float32)
    shift = target - blocks.mean(1, dtype=np.float64).astype(np.float32)
    shifted = blocks + shift[:, None]
    clips = np.flatnonzero((shifted.min(1) < 0) | (shifted.max(1) > 1))
    if len(clips):
        b, t = blocks[clips].astype(np.float64), target[clips].astype(np.float64)
        lo, hi = np.full(len(clips), -1.0), np.full(len(clips), 1.0)     # mean(clip(b - 1)) = 0 <= t <= 1
        for _ in range(EXACT_STEPS):
            mid = (lo + hi) / 2
            low = np.clip(b + mid[:, None], 0, 1).mean(1) < t
            lo, hi = np.where(low, mid, lo), np.where(low, hi, mid)
        shifted[clips] = np.clip(b + ((lo + hi) / 2)[:, None], 0, 1)
    np.clip(shifted, 0, 1, out=shifted)
    return np.ascontiguousarray(shifted.reshape(n, h, w, s, s).transpose(0, 1, 3, 2, 4).reshape(n, h * s, w * s))


def summarise(residual01: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """Per-volume numbers of a residual in [0, 1] units (fractions of the input's range): RMS,
    99th percentile of |r|, and the share of voxels whose |r| exceeds THRESHOLD."""
    r = np.abs(residual01 if mask is None else residual01[mask]).astype(np.float64)
    if r.size == 0:
        return {"rms": 0.0, "p99": 0.0, "share_above": 0.0, "threshold": THRESHOLD}
    return {"rms": float(np.sqrt(np.mean(r * r))), "p99": float(np.percentile(r, 99)),
            "share_above": float(np.mean(r > THRESHOLD)), "threshold": THRESHOLD}


def summarise_spread(spread01: np.ndarray) -> dict:
    """Per-volume numbers of an uncertainty map in [0, 1] units: mean and 99th percentile."""
    sample = spread01.reshape(-1)[:: max(1, spread01.size // 4_000_000)].astype(np.float64)  # percentile on a sample
    return {"mean": float(spread01.mean(dtype=np.float64)), "p99": float(np.percentile(sample, 99))}


def hold(mode: str):
    """The step as the engine applies it to each batch, `hold(output, input)`; `mode` as resolved
    once for the run (anchor, exact or none)."""
    if mode not in STEPS:
        raise ValueError(f"the consistency step must be one of {', '.join(STEPS)}, not {mode!r}")
    return None if mode == "none" else (lambda sr, lr: apply(sr, lr, mode))
