"""Ground-truth comparison on one volume (Rashid et al.'s Figure 3 as volumes): GT -> LR on the LR
grid -> SR, bicubic and bilinear on the GT grid, with per-slice metrics.

The numbers follow `evaluate`'s protocol (GT min-max to [0, 1], blank slices dropped, the
network and the baselines fed the same [0, 1] LR, outputs clipped) so that the Slicer table
and `mrsuperres evaluate` agree; the difference is that the GT is cropped (not padded) to a
multiple of the scale so that every volume lies on an exact grid.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..engine.batches import run_slices
from ..engine.calibration import make_runner
from ..engine.limits import MIN_SLICE, ProgressCallback
from ..errors import MRSuperResError, SlicesTooSmall
from ..options import CONSISTENCY_DEFAULT
from ..pipeline import consistency as consistency_step
from ..pipeline.through_plane import enhance_through_plane
from ..scans import geometry
from ..scans.degrade import crop_to_multiple, degrade_volume, simulate_thick_volume, thick_factor, whole_slices
from ..scans.resample import check_scale, upsample
from ..scans.slice_profile import interpolate
from ..scans.volumes import Volume, check_voxels, denormalise, intensity_range, normalise
from .metrics import score_slices
from .slices import prepare_slices

BASELINE_METHODS = ("bicubic", "bilinear")


@dataclass
class Comparison:
    ground_truth: Volume                       # cropped to a multiple of the scale in-plane
    low_resolution: Volume                     # on the LR grid
    outputs: dict[str, Volume]                 # "model", "bicubic", "bilinear" on the GT grid
    axis: int
    scale: int
    degradation: str
    per_slice: list[dict] = field(default_factory=list)   # {"slice", "method", metric: value}
    summary: dict = field(default_factory=dict)           # {method: {metric: {mean, std, n}}}
    maps: dict[str, Volume] = field(default_factory=dict)  # "error" (|SR - GT|), "consistency", "uncertainty"


def compare_volume(gt: Volume, model, *, scale: int = 4, degradation: str = "bilinear", axis="auto",
                   device: str = "auto", precision: str = "auto", blank_threshold: float = 0.0,
                   progress: ProgressCallback | None = None, cancel=None,
                   consistency: str = CONSISTENCY_DEFAULT, maps: bool = False) -> Comparison:
    """`degradation` "thick": slices `scale` voxels apart and thick along the slice axis, restored
    by a through-plane (x1) model; "bicubic" and "bilinear" are then cubic and linear
    interpolation across the slices (the axis that was made coarse), scored on the slices
    perpendicular to it as `evaluate --degrade thick` does. `maps`: the network runs the 8
    self-ensemble passes and the comparison also holds |SR - GT|, the consistency map and the
    uncertainty map (input units, on the GT grid; through-plane they cost no extra pass)."""
    if degradation == "thick":
        return _compare_thick(gt, model, factor=scale, axis=axis, device=device, precision=precision,
                              blank_threshold=blank_threshold, progress=progress, cancel=cancel, maps=maps)
    check_scale(scale)
    if model.scale != scale:
        raise MRSuperResError(f"the model is x{model.scale}, but x{scale} was asked for: choose an x{scale} model")
    data = check_voxels(gt.data, gt.meta.get("path", "ground truth"))
    ax = geometry.choose_axis(axis, gt.affine, data.shape)
    in_plane = [data.shape[a] for a in geometry.in_plane_axes(ax)]
    if min(in_plane) < scale * MIN_SLICE:
        raise SlicesTooSmall(f"the ground truth's slices ({in_plane[0]}x{in_plane[1]} voxels) are too small for "
                              f"x{scale}: they need at least {scale * MIN_SLICE} voxels a side")
    gt = crop_to_multiple(Volume(data, gt.affine, gt.meta), scale, ax)
    lr = degrade_volume(gt, scale, degradation, ax)
    lo, hi = intensity_range(gt.data)
    lr01 = normalise(geometry.slices_first(lr.data, ax), (lo, hi), clip=True)
    residual = np.empty(lr01.shape, np.float32)
    spread = np.empty((lr01.shape[0], lr01.shape[1] * scale, lr01.shape[2] * scale), np.float32) if maps else None
    step = consistency_step.for_model(consistency, model)
    runner = make_runner(model, device=device, precision=precision)
    outputs01 = {"model": run_slices(runner, lr01, progress=progress, cancel=cancel, hold=consistency_step.hold(step),
                                     self_ensemble=maps, spread=spread, residual=residual,
                                     departure=consistency_step.residual)}
    for m in BASELINE_METHODS:
        outputs01[m] = np.clip(upsample(lr01, scale, m), 0, 1)
    gt01, keep = prepare_slices(gt.data, ax, blank_threshold)       # evaluate's normalisation and blanks
    if len(keep) == 0:
        raise MRSuperResError("every slice of the ground truth is blank")
    rows, summary = score_slices(gt01, {m: o[keep] for m, o in outputs01.items()}, keep)
    outputs = {m: Volume(geometry.slices_back(denormalise(o, lo, hi), ax), gt.affine,
                         {k: v for k, v in gt.meta.items() if k not in ("path",)})
               for m, o in outputs01.items()}
    found = {}
    if maps:
        gt_stack = normalise(geometry.slices_first(gt.data, ax), (lo, hi))
        maps01 = {"error": np.abs(outputs01["model"] - gt_stack),
                  "consistency": consistency_step.on_output_grid(residual, scale), "uncertainty": spread}
        found = {m: Volume(geometry.slices_back(o * np.float32(hi - lo), ax), gt.affine) for m, o in maps01.items()}
    return Comparison(gt, lr, outputs, ax, scale, degradation, rows, summary, found)


def _compare_thick(gt: Volume, model, *, factor: int, axis, device, precision, blank_threshold, progress,
                   cancel, maps: bool) -> Comparison:
    if model.scale != 1:
        raise MRSuperResError(f"thick slices are restored by a through-plane (x1) model, not an x{model.scale} one")
    data = check_voxels(gt.data, gt.meta.get("path", "ground truth"))
    ax = geometry.choose_axis(axis, gt.affine, data.shape)
    gt = Volume(data, gt.affine, gt.meta)
    thickness = factor * float(gt.spacing[ax])
    gt = whole_slices(gt, ax, thick_factor(gt, ax, thickness, "the ground truth"))
    n = gt.data.shape[ax]
    lr = simulate_thick_volume(gt, ax, thickness)
    lo, hi = intensity_range(gt.data)
    lr01 = Volume(normalise(lr.data, (lo, hi), clip=True), lr.affine)
    sr, _ = enhance_through_plane(lr01, make_runner(model, device=device, precision=precision), axis=ax,
                                  progress=progress, cancel=cancel, maps=maps)
    outputs01 = {"model": geometry.slices_first(np.clip(sr.data, 0, 1), ax)}
    for m, kind in (("bicubic", "cubic"), ("bilinear", "linear")):
        outputs01[m] = geometry.slices_first(np.clip(interpolate(lr01.data, ax, factor, n, kind), 0, 1), ax)
    gt01, keep = prepare_slices(gt.data, ax, blank_threshold)
    if len(keep) == 0:
        raise MRSuperResError("every slice of the ground truth is blank")
    rows, summary = score_slices(gt01, {m: o[keep] for m, o in outputs01.items()}, keep)
    outputs = {m: Volume(geometry.slices_back(denormalise(np.ascontiguousarray(o), lo, hi), ax), gt.affine,
                         {k: v for k, v in gt.meta.items() if k not in ("path",)})
               for m, o in outputs01.items()}
    found = {}
    if maps:
        error = np.abs(np.clip(sr.data, 0, 1) - normalise(gt.data, (lo, hi))) * np.float32(hi - lo)
        found = {"error": Volume(error, gt.affine),
                 **{m: Volume(v.data * np.float32(hi - lo), gt.affine) for m, v in sr.maps.items()}}
    return Comparison(gt, lr, outputs, ax, factor, "thick", rows, summary, found)
