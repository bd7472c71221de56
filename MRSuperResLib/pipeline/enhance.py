"""The pipeline's public entries: a volume (`enhance_volume`) or a stack of slices
(`super_resolve_slices`) through a model, with everything "auto" decided here once: the direction
and plan (unless the caller made them), the engine's precision (engine.calibration), the
consistency step (the model card's), then handed down to in_plane or through_plane.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..engine.batches import run_slices
from ..engine.calibration import make_runner, seconds_per_output_voxel
from ..engine.limits import ProgressCallback
from ..engine.slices import SliceEngine
from ..errors import MRSuperResError
from ..models.catalog import detail_ends
from ..models.rrdbnet import RRDBNet
from ..options import CONSISTENCY_DEFAULT, SLICE_PROFILE_DEFAULT
from ..scans.volumes import Volume, check_voxels
from . import consistency as consistency_step
from .in_plane import enhance_in_plane
from .plan import Plan, check_spacing, choose_direction, make_plan
from .through_plane import check_model, enhance_through_plane


def enhance_volume(volume: Volume, model: RRDBNet, *, axis: str | int = "auto", direction: str = "in-plane",
                   spacing: float | None = None, device: str = "auto", batch_size: int | None = None,
                   precision: str = "auto", tile: int | None = None, compile: bool = False,
                   progress: ProgressCallback | None = None, cancel=None,
                   notify: Callable[[str], None] | None = None,
                   self_ensemble: bool = False, consistency: str = CONSISTENCY_DEFAULT, maps: bool = False,
                   engine: str = "auto", runner: SliceEngine | None = None, plan: Plan | None = None,
                   profile: str = SLICE_PROFILE_DEFAULT) -> tuple[Volume, dict]:
    """Super-resolve a volume; returns (HR volume in input units, run facts).

    `direction`: in-plane (each slice `model.scale` times finer), through-plane (the slice axis
    brought to `spacing` mm by an x1 model, see through_plane) or auto (through-plane for thick
    slices). `self_ensemble`: average over the 8 flips/rotations of each slice (8x the time).
    `consistency`: how the output is held to the input (anchor, exact, none; auto: the model
    card's; in-plane only, see the consistency module). Every in-plane run measures how far the
    network's output and the final output, re-acquired, are from the input
    (facts["data_consistency"]). `maps`: also return, as `hr.maps`, the consistency map (the
    network's output re-acquired minus the input: where it departs from the scan, and what the
    consistency step corrected; input units, on the output grid), the uncertainty map (standard
    deviation over the 8 self-ensemble passes, which `maps` runs: 8x the time; the output is then
    their mean) and, for a GAN model with its fidelity partner installed, the detail map
    (in_plane.detail_spread; 2 more passes). Through-plane, `maps` costs no extra pass: the
    consistency map re-acquires the output with the scan's slice `profile`, the uncertainty map is
    the spread of the two orientations (through_plane). `runner`: a SliceEngine already made for `model`
    (engine.calibration.make_runner); `plan`: the plan already made and shown (its direction, axis
    and spacing are then the run's).
    """
    consistency_step.check_mode(consistency)
    check_voxels(volume.data, volume.meta.get("path", "volume"))    # bad voxels: one line before any timing
    if plan is None:
        if direction == "in-plane":
            from ..scans import geometry
            chosen, ax, why = "in-plane", geometry.choose_axis(axis, volume.affine, volume.data.shape), "asked for"
        else:
            chosen, ax, why = choose_direction(volume, direction, axis)
        if chosen == "in-plane":
            check_spacing(volume, chosen, ax, spacing)
        check_direction(chosen, self_ensemble)
        if chosen == "through-plane":
            check_model(model)
        if chosen == "in-plane" and model.scale == 1:
            raise MRSuperResError("an x1 model is a through-plane model: use --direction through-plane (or auto)")
        plan = make_plan(volume, chosen, ax, why, model.scale, spacing)
    else:
        check_direction(plan.direction, self_ensemble)
    runner = runner or make_runner(model, device=device, precision=precision, engine=engine, compile=compile,
                                   notify=notify)
    if plan.direction == "through-plane" and plan.orientations is None:    # a plan not timed yet (panel, API)
        if maps:
            plan.orientations = 2
        before = len(plan.warnings)
        plan.timed(seconds_per_output_voxel(runner))
        for line in plan.warnings[before:]:
            if notify:
                notify(line)
    if plan.direction == "through-plane":
        return enhance_through_plane(volume, runner, plan=plan, batch_size=batch_size, tile=tile, progress=progress,
                                     cancel=cancel, maps=maps, profile=profile)
    return enhance_in_plane(volume, runner, plan, consistency=consistency_step.for_model(consistency, model),
                            self_ensemble=self_ensemble, maps=maps, detail_ends=detail_ends(model) if maps else None,
                            batch_size=batch_size, tile=tile, progress=progress, cancel=cancel)


def check_direction(direction: str, self_ensemble: bool) -> None:
    """The options that apply to in-plane super-resolution only, refused for a through-plane run
    (rotating a plane would put the slice axis across the network's rows)."""
    if direction == "through-plane" and self_ensemble:
        raise MRSuperResError("--self-ensemble applies to in-plane super-resolution only")


def super_resolve_slices(model: RRDBNet | SliceEngine, stack: np.ndarray, *, device: str | torch.device = "auto",
                         batch_size: int | None = None, precision: str = "auto", tile: int | None = None,
                         compile: bool = False, progress: ProgressCallback | None = None, cancel=None,
                         out: np.ndarray | None = None, notify: Callable[[str], None] | None = None,
                         self_ensemble: bool = False, consistency: str = CONSISTENCY_DEFAULT,
                         engine: str = "auto", spread: np.ndarray | None = None,
                         residual: np.ndarray | None = None) -> np.ndarray:
    """(N, h, w) float32 in [0, 1] -> (N, h s, w s) float32 clipped to [0, 1].

    `model`: a generator (its SliceEngine made here: `device`, `precision`, `engine`, `compile`)
    or a SliceEngine already made. `tile` (LR pixels) cuts each slice into overlapping tiles; by
    default slices larger than the per-pass budget are tiled. `cancel` is a threading.Event or a
    callable returning True to stop (raises Cancelled); `progress(done, total)` is called after
    every batch. `out`, if given, receives the result. `self_ensemble` averages the outputs for the
    8 flips and rotations of each slice (8x the time); `spread`, if given with it, receives their
    voxel-wise standard deviation (the uncertainty map). `consistency` holds each output to its
    input (anchor, exact or none; auto: the model card's); `residual`, an (N, h, w) array, receives
    the network's own departure from the input before that step (the consistency map).
    """
    runner = model if isinstance(model, SliceEngine) else make_runner(
        model, device=device, precision=precision, engine=engine, compile=compile, notify=notify)
    step = consistency_step.for_model(consistency_step.check_mode(consistency), runner.network)
    return run_slices(runner, stack, batch_size=batch_size, tile=tile, progress=progress, cancel=cancel, out=out,
                      self_ensemble=self_ensemble, hold=consistency_step.hold(step), spread=spread,
                      residual=residual, departure=consistency_step.residual)
