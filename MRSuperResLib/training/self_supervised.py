"""`mrsuperres train --self SCAN`: fine-tune the through-plane model on the scan it will enhance.

A thick-slice scan is fine in its own planes. Degrading those in-plane slices along one
direction by the scan's own slice spacing and thickness gives training pairs for exactly the
blur its slices have (SMORE's and ECLARE's self-supervision); the pretrained through-plane model
starts close, so a few minutes on a CPU are enough. The options derived here sit under any the
user gives (a config file or flags), so `--iters`, `--patch` or `--init` still apply.
"""
from __future__ import annotations

from ..scans import geometry
from ..errors import MRSuperResError

SELF_ITERS = 300           # about 3 minutes on 2 CPU cores for the shipped through-plane model
SELF_PATCH = 96
SELF_LR = 1e-4             # a fine-tune: half the psnr stage's from-scratch rate


def self_supervised_options(path: str, given: dict) -> dict:
    """Training options for a self-supervised through-plane fine-tune on `path`."""
    from ..options import THICK_DEFAULT_MODEL
    from ..scans.slice_profile import factor_of, slice_thickness_ratio
    from ..pipeline.plan import choose_direction
    from ..scans.volumes import read_volume

    if given.get("data") and [str(p) for p in given["data"]] != [str(path)]:   # a saved config repeats it
        raise MRSuperResError("--self trains on the scan it is given: leave out --data")
    volume = read_volume(path)
    _, axis, _ = choose_direction(volume, "through-plane")       # refuses a scan whose slices are not thick
    plane = min(float(volume.spacing[a]) for a in geometry.in_plane_axes(axis))
    factor = factor_of(float(volume.spacing[axis]), plane)
    ratio, _ = slice_thickness_ratio(volume, axis)
    return dict(data=[str(path)], scale=1, degrade="thick", slice_factors=[factor, factor],
                slice_thickness=[ratio, ratio], axis=str(axis), init=THICK_DEFAULT_MODEL, iters=SELF_ITERS,
                patch=SELF_PATCH, lr=SELF_LR, checkpoint_every=100)
