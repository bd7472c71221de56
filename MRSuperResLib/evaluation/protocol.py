"""Rashid et al.'s evaluation protocol on the user's own high-resolution volumes.

For each volume: per-volume min-max to [0, 1]; slices perpendicular to the axis; blank slices
(maximum <= blank_threshold, default 0: no tissue at all) dropped; each slice zero-padded at the
bottom/right to a multiple of the scale; LR made by the chosen degradation and clipped to
[0, 1]; the model and the interpolation baselines bring it back to the HR grid; outputs are
clipped to [0, 1] and cropped back to the original slice size (padding never enters a metric).
Metrics are per slice, then mean and std over all slices of all volumes.
"""
from __future__ import annotations

import os

import numpy as np

from ..engine.batches import run_slices
from ..engine.calibration import make_runner
from ..engine.limits import MIN_SLICE, ProgressCallback
from ..errors import MRSuperResError, SlicesTooSmall
from ..models.cards import model_provenance
from ..models.catalog import detail_ends
from ..options import BASELINES, CONSISTENCY_DEFAULT
from ..pipeline import consistency as consistency_step
from ..pipeline.in_plane import detail_spread
from ..scans import geometry
from ..scans.resample import check_scale, downsample, upsample
from ..scans.volumes import check_out_dir, read_volume, stem
from .map_scores import Ranking
from .outputs import write_outputs
from .slices import pad_to_multiple, prepare_slices
from .metrics import METRICS, score_slices, summarise_by_method


def score_as_shipped(path: str | os.PathLike, model, name: str = "model", **options) -> dict:
    """`evaluate` as the shipped models' figures are made (ship_model, rank_checkpoints): one volume,
    its axial slices, Rashid et al.'s bilinear degradation at the model's own scale, slices whose
    [0, 1] maximum is at most datasets.BLANK dropped; `options` (baselines, every, maps, out_dir)
    go to evaluate."""
    from ..models.datasets import BLANK

    axis = geometry.axial_axis(read_volume(str(path)).affine)
    return evaluate([str(path)], model, model_name=name, scale=model.scale, degradation="bilinear", axis=axis,
                    blank_threshold=BLANK, **options)


def evaluate(paths: list[str], model=None, *, model_name: str | None = None, model_card: dict | None = None,
             scale: int = 4, degradation: str = "bilinear", axis: str | int = "auto",
             out_dir: str | os.PathLike | None = None, device: str = "auto", batch_size: int | None = None,
             precision: str = "auto", tile: int | None = None, blank_threshold: float = 0.0, baselines=BASELINES,
             progress: ProgressCallback | None = None, cancel=None, self_ensemble: bool = False,
             consistency: str = CONSISTENCY_DEFAULT, maps: bool = False, engine: str = "auto",
             every: int = 1) -> dict:
    """Run the protocol; returns the metrics dict (and writes metrics.json, CSV, figure if out_dir).
    The model's name and sha256 come from the model itself (as load_model returns it); `model_name`
    and `model_card` override them for a network built in code.
    `self_ensemble`: the model's output is the mean over the 8 flips/rotations of each slice.
    `consistency`: how the output is held to the input, as for enhance (anchor, exact, none).
    Every run also scores how well the consistency map ranks the patches where the output is
    furthest from the truth; `maps` adds the uncertainty map (it runs the 8 self-ensemble passes)
    and, for a GAN model, the detail map (pipeline.in_plane.detail_spread). `every`: score one non-blank
    slice in `every` (to rank candidates quickly; published figures use every slice)."""
    self_ensemble = self_ensemble or maps
    check_scale(scale)
    if int(every) != every or every < 1:
        raise MRSuperResError(f"every must be a whole number of at least 1, not {every}")
    record = model_provenance(model) if model is not None else None
    if record is not None and model_name:
        record["name"] = model_name
    model_name = record["name"] if record else "model"
    if model_card and model_card.get("sha256") and record is not None:
        record["sha256"] = model_card["sha256"]
    if model is not None and model.scale != scale:
        raise MRSuperResError(f"model '{model_name}' is x{model.scale}, but --scale {scale} was asked")
    consistency = consistency_step.for_model(consistency, model)
    if not paths:
        raise MRSuperResError("no ground-truth volume given")
    out_dir = check_out_dir(out_dir)
    methods = (["model"] if model is not None else []) + list(baselines)
    volumes = [read_volume(p) for p in paths]          # fail on any bad file before computing
    rows, figure_data, n_total, kept = [], None, 0, []
    ranking, residuals = Ranking(scale), []
    plans = []
    for path, vol in zip(paths, volumes):
        ax = geometry.choose_axis(axis, vol.affine, vol.data.shape)
        h, w = (vol.data.shape[a] for a in geometry.in_plane_axes(ax))
        if min(h, w) < scale * MIN_SLICE:
            raise SlicesTooSmall(f"{path}: slices of {h}x{w} voxels are too small for x{scale} "
                                  f"(need at least {scale * MIN_SLICE} voxels a side)")
        plans.append((path, vol, ax))
    runner = make_runner(model, device=device, precision=precision, engine=engine) if model is not None else None  # inputs checked first
    ends = detail_ends(model) if maps else None
    total = sum(v.data.shape[ax] for _, v, ax in plans)
    done_before = 0
    for path, vol, ax in plans:
        gt, keep = prepare_slices(vol.data, ax, blank_threshold)
        gt, keep = gt[::every], keep[::every]
        if len(keep) == 0:
            raise MRSuperResError(f"{path}: every slice is blank")
        n, h, w = gt.shape
        lr = np.clip(downsample(pad_to_multiple(gt, scale), scale, degradation), 0, 1)
        outputs, found = {}, {}
        if model is not None:
            report = (lambda d, t, base=done_before, nv=vol.data.shape[ax]:
                      progress(base + round(d / t * nv), total)) if progress else None
            spread = np.empty((lr.shape[0], lr.shape[1] * scale, lr.shape[2] * scale), np.float32) \
                if self_ensemble else None
            lr_residual = np.empty(lr.shape, np.float32)
            outputs["model"] = run_slices(runner, lr, batch_size=batch_size, tile=tile, progress=report,
                                          cancel=cancel, self_ensemble=self_ensemble,
                                          hold=consistency_step.hold(consistency), spread=spread,
                                          residual=lr_residual, departure=consistency_step.residual)
            signal = lr > consistency_step.SIGNAL
            residuals.append((lr_residual[signal], consistency_step.residual(outputs["model"], lr)[signal]))
            found["consistency"] = consistency_step.on_output_grid(lr_residual, scale)[:, :h, :w]
            if spread is not None:
                found["uncertainty"] = spread[:, :h, :w]
            if ends is not None:
                found["detail"] = detail_spread([runner.like(end) for end in ends], lr, consistency=consistency,
                                                batch_size=batch_size, tile=tile, cancel=cancel)[:, :h, :w]
        for m in baselines:
            outputs[m] = np.clip(upsample(lr, scale, m), 0, 1)
        outputs = {m: o[:, :h, :w] for m, o in outputs.items()}
        if found:
            ranking.add(gt, outputs["model"], found)
        volume_rows, _ = score_slices(gt, outputs, keep)
        rows += [{"volume": str(path), **r} for r in volume_rows]
        if figure_data is None:
            best = int(np.argmax((gt > 0.1).reshape(n, -1).sum(1)))
            best_rows = volume_rows[best * len(methods):(best + 1) * len(methods)]
            figure_data = dict(volume=stem(path), slice=int(keep[best]), gt=gt[best],
                               lr=lr[best][: -(-h // scale), : -(-w // scale)],
                               outputs={m: outputs[m][best] for m in methods},
                               metrics={r["method"]: {k: r[k] for k in METRICS} for r in best_rows},
                               maps=({"error": np.abs(outputs["model"][best] - gt[best]),
                                      **{k: m[best] for k, m in found.items()}} if found else {}))
        n_total += n
        kept.append({"volume": str(path), "axis": int(ax), "slices": int(vol.data.shape[ax]), "kept": int(n)})
        done_before += vol.data.shape[ax]
        if progress:
            progress(done_before, total)
    result = {
        "scale": scale, "degradation": degradation, "n_slices": n_total, "every": every,
        "methods": summarise_by_method(rows, methods),
        "axis": [int(ax) for _, _, ax in plans],
        "volumes": [str(p) for p in paths],
        "slices_per_volume": kept,
        "model": ({**record, "scale": model.scale,
                   "precision": runner.precision, "engine": runner.engine, "precision_why": runner.choice.why,
                   "self_ensemble": self_ensemble, "consistency": consistency}
                  if model is not None else None),
        "data_consistency": ({"network": consistency_step.summarise(np.concatenate([r for r, _ in residuals])),
                              "output": consistency_step.summarise(np.concatenate([r for _, r in residuals]))}
                             if residuals else None),
        "maps": ranking.scores() if model is not None else {},
        "protocol": ("per-volume min-max to [0,1]; blank slices (max <= %g) dropped; zero-pad to a "
                     "multiple of the scale; LR = %s x%d (see MRSuperResLib.scans.resample), clipped to [0,1]; "
                     "outputs clipped to [0,1] and cropped to the original size; NRMSE = RMSE / mean(GT); "
                     "VIF pixel-domain, sigma_n^2 = 2 on [0,255]; data_consistency: the network's output (and "
                     "the final output) averaged over each LR voxel's box minus the LR, over LR voxels above %g; "
                     "maps: see MRSuperResLib.evaluation.map_scores"
                     % (blank_threshold, degradation, scale, consistency_step.SIGNAL)),
    }
    if out_dir is not None:
        write_outputs(out_dir, result, rows, figure_data, model_name)
    return result
