"""Rashid et al.'s evaluation protocol on the user's own high-resolution volumes.

For each volume: per-volume min-max to [0, 1]; slices perpendicular to the axis; blank slices
(maximum <= blank_threshold, default 0: no tissue at all) dropped; each slice zero-padded at the
bottom/right to a multiple of the scale; LR made by the chosen degradation and clipped to
[0, 1]; the model and the interpolation baselines bring it back to the HR grid; outputs are
clipped to [0, 1] and cropped back to the original slice size (padding never enters a metric).
Metrics are per slice, then mean and std over all slices of all volumes.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from . import consistency as consistency_step
from . import geometry
from .errors import MRSuperResError
from .catalog import detail_ends
from .inference import MIN_SLICE, ProgressCallback, SliceEngine, super_resolve_slices
from .map_scores import Ranking, describe
from .metrics import METRICS, score_slices, summarise_by_method
from .output_maps import detail_spread
from .resample import BASELINES, check_scale, downsample, upsample
from .cards import model_provenance
from .volumes import intensity_range, normalise, read_volume, stem
from .files import atomic_write_bytes


def prepare_slices(data: np.ndarray, axis: int, blank_threshold: float = 0.0):
    """[0, 1]-normalised non-blank slices (N, H, W) of a volume, and their indices."""
    lo, hi = intensity_range(data)
    stack = geometry.slices_first(data, axis)
    peaks = stack.reshape(stack.shape[0], -1).max(1)
    keep = np.flatnonzero((peaks - lo) / (hi - lo) > blank_threshold)
    return normalise(stack[keep], (lo, hi), clip=True), keep


def score_as_shipped(path: str | os.PathLike, model, name: str = "model", **options) -> dict:
    """`evaluate` as the shipped models' figures are made (ship_model, rank_checkpoints): one volume,
    its axial slices, Rashid et al.'s bilinear degradation at the model's own scale, slices whose
    [0, 1] maximum is at most datasets.BLANK dropped; `options` (baselines, every, maps, out_dir)
    go to evaluate."""
    from .datasets import BLANK

    axis = geometry.axial_axis(read_volume(str(path)).affine)
    return evaluate([str(path)], model, model_name=name, scale=model.scale, degradation="bilinear", axis=axis,
                    blank_threshold=BLANK, **options)


def pad_to_multiple(stack: np.ndarray, multiple: int) -> np.ndarray:
    n, h, w = stack.shape
    return np.pad(stack, ((0, 0), (0, (-h) % multiple), (0, (-w) % multiple)))


def evaluate(paths: list[str], model=None, *, model_name: str | None = None, model_card: dict | None = None,
             scale: int = 4, degradation: str = "bilinear", axis: str | int = "auto",
             out_dir: str | os.PathLike | None = None, device: str = "auto", batch_size: int | None = None,
             precision: str = "auto", tile: int | None = None, blank_threshold: float = 0.0, baselines=BASELINES,
             progress: ProgressCallback | None = None, cancel=None, self_ensemble: bool = False,
             consistency: str = consistency_step.DEFAULT, maps: bool = False, engine: str = "auto",
             every: int = 1) -> dict:
    """Run the protocol; returns the metrics dict (and writes metrics.json, CSV, figure if out_dir).
    The model's name and sha256 come from the model itself (as load_model returns it); `model_name`
    and `model_card` override them for a network built in code.
    `self_ensemble`: the model's output is the mean over the 8 flips/rotations of each slice.
    `consistency`: how the output is held to the input, as for enhance (anchor, exact, none).
    Every run also scores how well the consistency map ranks the patches where the output is
    furthest from the truth; `maps` adds the uncertainty map (it runs the 8 self-ensemble passes)
    and, for a GAN model, the detail map (output_maps.detail_spread). `every`: score one non-blank
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
            raise MRSuperResError(f"{path}: slices of {h}x{w} voxels are too small for x{scale} "
                                  f"(need at least {scale * MIN_SLICE} voxels a side)")
        plans.append((path, vol, ax))
    runner = SliceEngine(model, device=device, precision=precision, engine=engine) if model is not None else None  # inputs checked first
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
            outputs["model"] = super_resolve_slices(runner, lr, batch_size=batch_size, tile=tile, progress=report,
                                                    cancel=cancel, self_ensemble=self_ensemble,
                                                    consistency=consistency, spread=spread, residual=lr_residual)
            signal = lr > consistency_step.SIGNAL
            residuals.append((lr_residual[signal], consistency_step.residual(outputs["model"], lr)[signal]))
            found["consistency"] = consistency_step.on_output_grid(lr_residual, scale)[:, :h, :w]
            if spread is not None:
                found["uncertainty"] = spread[:, :h, :w]
            if ends is not None:
                found["detail"] = detail_spread(ends, lr, consistency=consistency, device=str(runner.device),
                                                precision=runner.precision, engine=runner.engine,
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
                     "multiple of the scale; LR = %s x%d (see MRSuperResLib.resample), clipped to [0,1]; "
                     "outputs clipped to [0,1] and cropped to the original size; NRMSE = RMSE / mean(GT); "
                     "VIF pixel-domain, sigma_n^2 = 2 on [0,255]; data_consistency: the network's output (and "
                     "the final output) averaged over each LR voxel's box minus the LR, over LR voxels above %g; "
                     "maps: see MRSuperResLib.map_scores"
                     % (blank_threshold, degradation, scale, consistency_step.SIGNAL)),
    }
    if out_dir is not None:
        write_outputs(out_dir, result, rows, figure_data, model_name)
    return result


def check_out_dir(out_dir: str | os.PathLike | None, option: str = "--out") -> Path | None:
    """An output folder as a Path, refused in one line before any work when it cannot be written."""
    out_dir = Path(out_dir) if out_dir else None
    if out_dir is not None:
        if out_dir.exists() and not out_dir.is_dir():
            raise MRSuperResError(f"{option} {out_dir} exists and is not a folder")
        existing = next(p for p in [out_dir, *out_dir.absolute().parents] if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            raise MRSuperResError(f"cannot write to {option} {out_dir} ({existing} is not a writable folder)")
    return out_dir


def write_outputs(out_dir: Path, result: dict, rows: list[dict], figure_data: dict, model_name: str,
                  fields: list[str] | None = None) -> None:
    """metrics.json, per_slice.csv (columns `fields`) and figure.png, each written atomically."""
    from .figure import comparison_figure

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MRSuperResError(f"cannot create --out {out_dir}: {exc.strerror or exc}") from None
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields or ["volume", "slice", "method", *METRICS], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    png = comparison_figure(figure_data, result["scale"], result["degradation"], model_name)
    atomic_write_bytes(out_dir / "per_slice.csv", buffer.getvalue().encode())
    atomic_write_bytes(out_dir / "figure.png", png)
    atomic_write_bytes(out_dir / "metrics.json", (json.dumps(result, indent=2) + "\n").encode())


def format_table(result: dict) -> str:
    """The summary table printed by `mrsuperres evaluate`."""
    lines = [f"{v['volume']}: {v['kept']} of {v['slices']} slices along axis {v['axis']} kept (others blank)"
             if "kept" in v else f"{v['volume']}: the first {v['voxels_scored']} voxels along axis {v['axis']} "
             f"(whole {v['factor']:g}x slices) scored" for v in result.get("slices_per_volume", [])]
    if "orientations" in result:                 # through-plane: one table per orientation
        for name, methods in result["orientations"].items():
            lines += _table(f"{result['degradation']}, {name} slices (mean +/- std)", methods)
        return "\n".join(lines)
    lines += _table(f"x{result['scale']} {result['degradation']}, {result['n_slices']} slices (mean +/- std)",
                    result["methods"])
    if result.get("data_consistency"):
        d, out = result["data_consistency"]["network"], result["data_consistency"]["output"]
        lines.append(f"network output re-acquired (box) vs the LR: RMS {100 * d['rms']:.2f}% of the range, "
                     f"{100 * d['share_above']:.1f}% of voxels off by more than {100 * d['threshold']:.0f}%; "
                     f"after --consistency {result['model']['consistency']}: RMS {100 * out['rms']:.2f}%")
    lines += describe(result.get("maps") or {})
    return "\n".join(lines)


def _table(title: str, methods: dict) -> list[str]:
    lines = [title, f"{'method':10s}" + "".join(f"{m.upper():>17s}" for m in METRICS)]
    for method, stats in methods.items():
        cells = []
        for m in METRICS:
            s = stats[m]
            digits = 2 if m == "psnr" else 4
            cells.append(f"{s['mean']:.{digits}f}+/-{s['std']:.{digits}f}" if s["mean"] is not None else "n/a")
        lines.append(f"{method:10s}" + "".join(f"{c:>17s}" for c in cells))
    return lines
