"""The maps that come with an output beside the consistency map: the detail map of a GAN model
(its spread across the detail setting), and any map as a volume on the output's grid.
enhance_volume and evaluate make them (docs/consistency.md)."""
from __future__ import annotations

import numpy as np

from . import geometry
from .inference import SliceEngine, super_resolve_slices
from .volumes import Volume


def detail_spread(ends: tuple, stack: np.ndarray, *, consistency: str, device, precision: str, engine: str,
                  batch_size=None, tile=None, cancel=None, progress=None) -> np.ndarray:
    """For a GAN model (or a blend with its fidelity partner; `ends` = catalog.detail_ends): the
    spread of the output across the detail setting, the standard deviation over its two ends,
    |GAN - fidelity| / 2, one pass of each with the same consistency step, in [0, 1] units.
    Where the GAN's texture departs from the fidelity model's estimate."""
    outs = []
    for i, end in enumerate(ends):
        runner = SliceEngine(end, device=device, precision=precision, engine=engine)
        step = None if progress is None else (lambda d, t, i=i: progress((i * t + d) // 2, t))
        outs.append(super_resolve_slices(runner, stack, batch_size=batch_size, tile=tile, cancel=cancel,
                                         consistency=consistency, progress=step))
    spread = outs[1]
    spread -= outs[0]
    np.abs(spread, out=spread)
    spread *= np.float32(0.5)
    return spread


def map_volume(stack: np.ndarray, like: Volume, axis: int, what: str) -> Volume:
    """A map (slices first) as a volume on `like`'s grid, saying what it is."""
    meta = {k: v for k, v in like.meta.items() if k not in ("description", "path", "dtype", "format")}
    return Volume(geometry.slices_back(stack, axis), like.affine, {**meta, "description": f"MRSuperRes {what}"})
