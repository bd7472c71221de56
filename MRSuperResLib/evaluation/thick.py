"""The ground-truth protocol for through-plane super-resolution (`evaluate --degrade thick`).

For each isotropic volume: min-max to [0, 1]; thick slices simulated along the slice axis
(`--thickness` mm apart and thick, contiguous; Gaussian or rectangular profile, slice_profile)
on the coarse grid of the project's rule; the model (through_plane, as `enhance` runs it) and
cubic interpolation across the slices bring it back to the original grid, which is cropped to
the whole slices' extent. Metrics per slice, blank slices dropped, in each orientation: the
slices perpendicular to the slice axis (the acquired planes and those between them) and the
two reformatted orientations that contain the slice axis, where the thick-slice blur shows.
With a model, its two maps (consistency, re-acquired with the simulated profile; uncertainty, the
spread of the two orientations) are scored against the error on the perpendicular slices
(map_scores, in patches of 8 x 8 fine voxels: MAP_SCALE).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..engine.calibration import make_runner
from ..errors import MRSuperResError
from ..models.cards import model_provenance
from ..pipeline.through_plane import enhance_through_plane
from ..scans import geometry
from ..scans.degrade import simulate_thick_volume, thick_factor, whole_slices
from ..scans.slice_profile import PROFILES, interpolate
from ..scans.volumes import Volume, check_out_dir, intensity_range, normalise, read_volume, stem
from .map_scores import Ranking
from .metrics import METRICS, score_slices, summarise_by_method
from .outputs import write_outputs


MAP_SCALE = 2           # map_scores' patches of 4 voxels times this: 8 x 8 fine voxels of a perpendicular slice


def evaluate_thick(paths: list[str], model=None, *, thickness: float = 5.0, profile: str = "gaussian",
                   axis="auto", out_dir: str | os.PathLike | None = None, device: str = "auto",
                   batch_size: int | None = None, precision: str = "auto", tile: int | None = None,
                   blank_threshold: float = 0.0, progress=None, cancel=None, engine: str = "auto") -> dict:
    """Run the protocol; returns the metrics dict (metrics.json, per_slice.csv, figure.png in out_dir)."""

    if profile not in PROFILES:
        raise MRSuperResError(f"unknown slice profile '{profile}' ({', '.join(PROFILES)})")
    if model is not None and model.scale != 1:
        raise MRSuperResError(f"--degrade thick scores a through-plane (x1) model, not an x{model.scale} one")
    if not paths:
        raise MRSuperResError("no ground-truth volume given")
    check_out_dir(out_dir)
    volumes = [read_volume(p) for p in paths]                  # every file checked before any work
    plans = []
    for path, vol in zip(paths, volumes):
        ax = geometry.choose_axis(axis, vol.affine, vol.data.shape)
        plans.append((path, vol, ax, thick_factor(vol, ax, thickness, str(path))))
    runner = make_runner(model, device=device, precision=precision, engine=engine) if model is not None else None
    methods = (["model"] if model is not None else []) + ["cubic"]
    rows, by_orientation, figure_data, kept = [], {}, None, []
    ranking = Ranking(MAP_SCALE)
    for index, (path, vol, ax, factor) in enumerate(plans):
        lo, hi = intensity_range(vol.data)
        gt = normalise(whole_slices(vol, ax, factor).data, (lo, hi), clip=True)
        n = gt.shape[ax]
        thick = simulate_thick_volume(Volume(gt, vol.affine), ax, thickness, profile)
        outputs = {"cubic": np.clip(interpolate(thick.data, ax, factor, n), 0, 1)}
        if model is not None:
            report = (lambda d, t, i=index: progress(i * 1000 + round(1000 * d / t), 1000 * len(plans))) \
                if progress else None
            sr, _ = enhance_through_plane(thick, runner, axis=ax, batch_size=batch_size, tile=tile,
                                          progress=report, cancel=cancel, maps=True, profile=profile)
            outputs["model"] = np.clip(sr.data, 0, 1)
            ranking.add(geometry.slices_first(gt, ax), geometry.slices_first(outputs["model"], ax),
                        {name: geometry.slices_first(m.data, ax) for name, m in sr.maps.items()})
            del sr
        for orient in range(3):
            gt_stack = geometry.slices_first(gt, orient)
            peaks = gt_stack.reshape(gt_stack.shape[0], -1).max(1)
            keep = np.flatnonzero(peaks > blank_threshold)
            stacks = {m: geometry.slices_first(outputs[m], orient)[keep] for m in methods}
            orient_rows, _ = score_slices(gt_stack[keep], stacks, keep)
            name = "perpendicular" if orient == ax else geometry.AXIS_NAMES[orient].split()[0]
            tagged = [{"volume": str(path), "orientation": name, **r} for r in orient_rows]
            by_orientation.setdefault(name, []).extend(tagged)
            rows += tagged
        if figure_data is None:
            b = geometry.in_plane_axes(ax)[0]                   # a reformatted plane: the slice axis in view
            gt_b = geometry.slices_first(gt, b)
            best = int(np.argmax((gt_b > 0.1).reshape(gt_b.shape[0], -1).sum(1)))
            outs = {m: geometry.slices_first(outputs[m], b)[best] for m in methods}
            plane_rows, _ = score_slices(gt_b[best:best + 1], {m: o[None] for m, o in outs.items()}, [best])
            figure_data = dict(volume=stem(path), slice=best, gt=gt_b[best],
                               lr=geometry.slices_first(thick.data, b)[best], outputs=outs,
                               metrics={r["method"]: {k: r[k] for k in METRICS} for r in plane_rows})
        kept.append({"volume": str(path), "axis": int(ax), "factor": factor, "voxels_scored": int(n)})
    result = {
        "degradation": f"thick {thickness:g} mm ({profile})", "thickness_mm": thickness, "profile": profile,
        "scale": 1, "n_slices": len(by_orientation.get("perpendicular", [])) // len(methods),
        "methods": summarise_by_method(by_orientation["perpendicular"], methods),
        "maps": ranking.scores() if model is not None else {},
        "orientations": {k: summarise_by_method(v, methods) for k, v in by_orientation.items()},
        "volumes": [str(p) for p in paths], "slices_per_volume": kept,
        "model": ({**model_provenance(model), "precision": runner.precision, "engine": runner.engine,
                   "precision_why": runner.choice.why, "consistency": "none"} if model is not None else None),
        "protocol": ("per-volume min-max to [0,1]; thick slices %g mm apart and thick (%s profile, FWHM = "
                     "thickness) along the slice axis, cropped to whole slices; model = through-plane x1 in both "
                     "orientations, averaged, not anchored; cubic = Keys a=-0.5 across the slices; outputs clipped to [0,1]; "
                     "blank slices (max <= %g) dropped in each orientation" % (thickness, profile, blank_threshold)),
    }
    if out_dir is not None:
        write_outputs(Path(out_dir), result, rows, figure_data, result["model"]["name"] if model is not None
                      else "model", fields=["volume", "orientation", "slice", "method", *METRICS])
    return result
