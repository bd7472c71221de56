"""Super-resolution within the slices of a volume, with its maps.

Volume in -> per-volume min-max to [0, 1] -> slices perpendicular to the plan's axis, streamed in
batches through the engine (in its working range: stretched where a few bright voxels set the
scan's range, engine/working_range) -> clipped to [0, 1] -> held to the input (the run's consistency step:
anchored to its local brightness, or projected to reproduce it exactly) -> back to the input's
intensity units -> volume out on the HR grid of `geometry.resample_affine`. With `maps`, the
consistency map (the network's output re-acquired minus the input), the uncertainty map (spread of
the 8 self-ensemble passes) and, for a GAN model with its fidelity partner, the detail map (its
spread across the detail setting) come on the same grid (docs/consistency.md).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ..engine import working_range
from ..engine.batches import run_slices
from ..engine.slices import SliceEngine
from ..errors import MRSuperResError
from ..models.cards import model_provenance
from ..scans import geometry
from ..scans.volumes import Volume, check_voxels, denormalise, intensity_range, normalise
from . import consistency as consistency_step
from .plan import Plan, describe_output


def enhance_in_plane(volume: Volume, runner: SliceEngine, plan: Plan, *, consistency: str, self_ensemble: bool = False,
                     maps: bool = False, detail_ends: tuple | None = None, batch_size: int | None = None,
                     tile: int | None = None, progress=None, cancel=None) -> tuple[Volume, dict]:
    """`volume` `runner.scale` times finer along the two axes of the plan's slices; returns (HR
    volume in input units, run facts). `consistency`: the step resolved for this run (anchor, exact
    or none); `detail_ends`: (fidelity, GAN) networks of a GAN model when `maps` asks for the
    detail map (models.catalog.detail_ends). Every run measures how far the network's output and
    the final output, re-acquired, are from the input (facts["data_consistency"]).

    Memory: the input as float32 plus the float32 output, nothing in float64; slices stream
    through the network in batches and their results land in the output in place (with
    `self_ensemble`, plus one output-sized buffer for the pass under way; with `maps`, up to
    three more: the spread, the consistency map, and the detail map's two passes in turn).
    """
    model = runner.network
    if model.scale == 1:
        raise MRSuperResError("an x1 model is a through-plane model: use --direction through-plane (or auto)")
    data = check_voxels(volume.data, volume.meta.get("path", "volume"))
    ax = plan.axis
    lo, hi = intensity_range(data)
    stack = geometry.slices_first(data, ax)
    t0 = time.perf_counter()
    normalised = normalise(stack, (lo, hi))
    ceiling = working_range.ceiling(normalised)
    s = model.scale
    spread = np.empty((stack.shape[0], stack.shape[1] * s, stack.shape[2] * s), np.float32) if maps else None
    lr_residual = np.empty(stack.shape, np.float32)
    gan = maps and detail_ends is not None
    passes = (8 if self_ensemble or maps else 1) + (2 if gan else 0)
    sr = run_slices(runner, normalised, batch_size=batch_size, tile=tile,
                    progress=_passes(progress, 0, passes - 2 * gan, passes), cancel=cancel,
                    self_ensemble=self_ensemble or maps, hold=consistency_step.hold(consistency),
                    spread=spread, residual=lr_residual, departure=consistency_step.residual, ceiling=ceiling)
    detail = detail_spread([runner.like(end) for end in detail_ends], normalised, consistency=consistency,
                           batch_size=batch_size, tile=tile, cancel=cancel, ceiling=ceiling,
                           progress=_passes(progress, passes - 2, 2, passes)) if gan else None
    signal = normalised > consistency_step.SIGNAL
    facts_consistency = {"network": consistency_step.summarise(lr_residual, signal),
                         "output": consistency_step.summarise(consistency_step.residual(sr, normalised), signal)}
    del normalised, signal
    denormalise(sr, lo, hi, in_place=True)
    hr = volume.regridded(geometry.slices_back(sr, ax), ax, s)
    facts = dict(direction="in-plane", axis=ax, axis_name=geometry.AXIS_NAMES[ax], scale=s,
                 input_shape=list(data.shape), output_shape=list(hr.data.shape),
                 intensity_range=[lo, hi], network_ceiling=ceiling, seconds=time.perf_counter() - t0,
                 slices=stack.shape[0],
                 device=str(runner.device), precision=runner.precision, engine=runner.engine,
                 precision_why=runner.choice.why,
                 threads=torch.get_num_threads(),
                 self_ensemble=self_ensemble or maps, consistency=consistency,
                 data_consistency=facts_consistency, model=model_provenance(model))
    if maps:
        facts["uncertainty"] = consistency_step.summarise_spread(spread)
        if detail is not None:
            facts["detail_spread"] = consistency_step.summarise_spread(detail)
        lr_residual *= np.float32(hi - lo)
        spread *= np.float32(hi - lo)
        hr.maps = {"consistency": map_volume(consistency_step.on_output_grid(lr_residual, s), hr, ax,
                                              "network output re-acquired (box) minus input, input units"),
                   "uncertainty": map_volume(spread, hr, ax, "std over the 8 self-ensemble passes, input units")}
        if detail is not None:
            detail *= np.float32(hi - lo)
            hr.maps["detail"] = map_volume(detail, hr, ax, "|GAN - fidelity| / 2 (detail 1 vs 0), input units")
    hr.meta["description"] = describe_output(facts)
    return hr, facts


def detail_spread(runners: list, stack: np.ndarray, *, consistency: str, batch_size=None, tile=None, cancel=None,
                  progress=None, ceiling: float | None = None) -> np.ndarray:
    """For a GAN model (or a blend with its fidelity partner): the spread of the output across the
    detail setting, the standard deviation over its two ends, |GAN - fidelity| / 2, one pass of
    each (`runners`, as the run's) with the same consistency step, in [0, 1] units. Where the GAN's
    texture departs from the fidelity model's estimate."""
    outs = []
    for i, runner in enumerate(runners):
        step = None if progress is None else (lambda d, t, i=i: progress((i * t + d) // 2, t))
        outs.append(run_slices(runner, stack, batch_size=batch_size, tile=tile, cancel=cancel,
                               hold=consistency_step.hold(consistency), progress=step, ceiling=ceiling))
    spread = outs[1]
    spread -= outs[0]
    np.abs(spread, out=spread)
    spread *= np.float32(0.5)
    return spread


def map_volume(stack: np.ndarray, like: Volume, axis: int, what: str) -> Volume:
    """A map (slices first) as a volume on `like`'s grid, saying what it is."""
    return like.map_of(geometry.slices_back(stack, axis), what)


def _passes(progress, start: int, count: int, total: int):
    """progress(done, n) of one part of a run that makes `total` passes over the slices in all."""
    if progress is None:
        return None
    return lambda done, n: progress((start * n + done * count) // total, n)
