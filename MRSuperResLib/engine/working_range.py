"""The intensity range the network works in, for scans whose range is set by a few bright voxels.

Every path maps a scan to [0, 1] by its minimum and maximum. Where a handful of voxels are far
brighter than the tissue (enhancing vessels in a contrast-enhanced T1, a registration's
interpolation overshoot, a hot pixel), the tissue ends up in the bottom fifth of that range, a
contrast the networks never saw in training: the x4 model's gain over bicubic falls from +2.6
to +0.9 dB with Colin27's brain at 1/8 of the range (docs/models.md, "Bright voxels"). So the network
sees the stack clipped at a ceiling `c` and stretched by 1 / c, and what lies above the ceiling
(the bright voxels' excess) is interpolated and added back: output = c * network(min(x, c) / c)
+ interpolate(max(x - c, 0)). The brightest structures keep their intensity; interpolation is
linear, so nothing is lost that bicubic would have kept.

The ceiling is 1 (the network sees the scan as it is) unless the 99.9th percentile of the voxels
above the minimum lies below TISSUE_LEVEL; then it is that percentile / TISSUE_LEVEL, which puts
the tissue where it lies in the scans the models were trained and validated on: their 99.9th
percentiles lie between 0.43 and 0.95, and above 0.3 once reduced x4, so none of the validation
and independent volumes is changed at x2, x4 or x8 (of the training ones, heudiconv-b0 and
robex-atlas at x8, by c = 0.79 and 0.96).
Stretching further gains more on bright-voxel scans (0.4: +2.8 against +2.3 dB on Colin27 with a
voxel 8 times its maximum) but moved a clean T2 reduced x8 (dipy-s0) by -0.14 dB.
"""
from __future__ import annotations

import numpy as np

TISSUE_LEVEL = 0.3       # the 99.9th percentile of the voxels above the minimum is stretched up to this
PERCENTILE = 99.9
MIN_CEILING = 0.05       # a scan that is one bright voxel in the dark is stretched at most 20x
BINS = 4096              # the percentile from a histogram: exact to 1/BINS, the same in any slice order


def ceiling(stack01: np.ndarray) -> float:
    """The level in [MIN_CEILING, 1] mapped to the network's 1 for this stack (in [0, 1])."""
    hist, _ = np.histogram(stack01, bins=BINS, range=(0.0, 1.0))
    hist[0] = 0                                      # the minimum (air, the masked background)
    total = int(hist.sum())
    if total == 0:
        return 1.0
    index = int(np.searchsorted(np.cumsum(hist), PERCENTILE / 100 * total))
    level = (index + 1) / BINS
    return float(min(1.0, max(MIN_CEILING, level / TISSUE_LEVEL)))


def split(x: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray | None]:
    """(what the network sees, the excess above the ceiling or None where c is 1)."""
    if c >= 1.0:
        return x, None
    seen = np.minimum(x, np.float32(c))
    excess = x - seen
    seen *= np.float32(1 / c)
    return seen, excess


def join(y: np.ndarray, excess: np.ndarray | None, c: float, scale: int) -> np.ndarray:
    """The network's output `y` (its own [0, 1]) back in the stack's units, with the excess
    interpolated (bicubic at `scale`) and added; clipped to [0, 1]."""
    if excess is None:
        return y
    out = np.asarray(y, dtype=np.float32) * np.float32(c)
    if scale == 1:
        out += excess
    else:
        # torch here: `describe` is read where torch is not installed. The call is scans.resample.upsample's
        # (the bicubic baseline's); importing that from the engine puts the CLI a ninth layer up (architecture.md)
        import torch
        from torch.nn import functional as F

        with torch.no_grad():
            up = F.interpolate(torch.from_numpy(np.ascontiguousarray(excess, dtype=np.float32))[:, None],
                               scale_factor=scale, mode="bicubic", align_corners=False)[:, 0].numpy()
        out += up
    return np.clip(out, 0, 1, out=out)


def describe(c: float) -> str:
    """The line a run's report carries when the scan was stretched (empty when it was not)."""
    if c >= 1.0:
        return ""
    return (f"a few voxels are far brighter than the rest, so the network saw the scan up to {int(100 * c)}% "
            "of its range and the brighter voxels were interpolated")
