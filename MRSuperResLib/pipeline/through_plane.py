"""Super-resolution across the slices of a thick-slice scan (its plan is made in `plan`).

Most clinical brain MRI is 2D: about 1 mm in the plane, 4-6 mm between slices. Making the
planes finer (in-plane, x4) leaves the thick-slice blur and makes a file 16x larger; what such a
scan needs is finer spacing along the slice axis. Method (after SMORE and ECLARE, with the
project's 1-channel RRDBNet at x1):

1. cubic interpolation along the slice axis onto the target spacing (slice_profile);
2. the x1 network over every plane that contains the slice axis, in both orientations
   (slice axis as image rows, as in training), undoing the slice-profile blur;
3. the two estimates averaged. Each is equally valid; the average halves their independent
   errors (0.4 dB over one alone on Colin27 at 5 mm; a plan for a long run takes one, plan.timed).
   SMORE's Fourier burst accumulation keeps, per frequency, the larger magnitude of the
   two, which also keeps the larger of two noise draws.

With `maps`, at no extra network pass: the consistency map (the output re-acquired with the
scan's slice profile minus the scan: where the result departs from what was measured) and the
uncertainty map (the spread of the two orientations' estimates, |a - b| / 2).

The model learns the slice profile from in-plane slices degraded along one direction only
(slice_profile.training_pair); `train --self` fine-tunes it on the scan's own in-plane slices.
"""
from __future__ import annotations

import time

import numpy as np

from ..engine import working_range
from ..engine.batches import run_slices
from ..errors import MRSuperResError
from ..models.cards import model_provenance
from ..options import THICK_DEFAULT_MODEL
from ..scans import geometry
from ..options import SLICE_PROFILE_DEFAULT
from ..scans.slice_profile import along, interpolate, nearest_coarse, profile_matrix, slice_thickness_ratio
from ..scans.volumes import Volume, check_voxels, denormalise, intensity_range, normalise
from . import consistency as consistency_step
from .plan import Plan, check_orientations, choose_direction, describe_output, make_plan


def enhance_through_plane(volume: Volume, runner, *, plan: Plan | None = None, axis="auto",
                          spacing: float | None = None, batch_size: int | None = None, tile: int | None = None,
                          progress=None, cancel=None, maps: bool = False,
                          profile: str = SLICE_PROFILE_DEFAULT) -> tuple[Volume, dict]:
    """A thick-slice volume on a grid `factor` times finer along its slice axis (same extent, the
    geometry's rule); returns (volume in input units, run facts). `runner`: the SliceEngine of an x1
    model (engine.calibration.make_runner); `plan`: the run's plan (made here from `axis` and
    `spacing` when not given). Never anchored: holding the output's local brightness to
    the cubic input undoes most of the deblurring (on held-out Colin27 at 5 mm, +0.4 dB over cubic
    anchored against +1.5 dB not). `maps`: also `hr.maps` (consistency and uncertainty, input
    units, on the output grid), re-acquiring with `profile` and the header's slice thickness
    (the spacing where the header has none). Memory with maps: one more output-sized buffer."""
    model = runner.network
    check_model(model)
    data = check_voxels(volume.data, volume.meta.get("path", "volume"))
    if plan is None:
        direction, ax, why = choose_direction(volume, "through-plane", axis)
        plan = make_plan(volume, direction, ax, why, spacing=spacing)
    ax, factor = plan.axis, plan.factor
    b, c = geometry.in_plane_axes(ax)
    runs = ((b, c), (c, b))[:plan.runs()]
    check_orientations(len(runs), maps)
    t0 = time.perf_counter()
    lo, hi = intensity_range(data)
    scan01 = normalise(data, (lo, hi))
    ceiling = working_range.ceiling(scan01)          # the scan's, for both orientations
    fine = interpolate(scan01, ax, factor)
    if not maps:
        scan01 = None                         # kept through the run only for the consistency map
    out = np.zeros(fine.shape, np.float32)
    spread = None
    total, done = sum(fine.shape[other] for other, _ in runs), 0
    for other, rest in runs:
        # planes perpendicular to `other`, the slice axis as rows (as the network was trained)
        order = (other, ax, rest)
        stack = np.ascontiguousarray(np.moveaxis(fine, order, (0, 1, 2)))
        report = (lambda d, n, offset=done: progress(offset + d, total)) if progress else None
        sr = run_slices(runner, stack, batch_size=batch_size, tile=tile, progress=report, cancel=cancel,
                        ceiling=ceiling)
        if maps and spread is None:
            spread = np.moveaxis(sr, (0, 1, 2), order).copy()          # the first orientation's estimate
        elif maps:
            spread -= np.moveaxis(sr, (0, 1, 2), order)
        out += np.moveaxis(sr, (0, 1, 2), order)
        done += stack.shape[0]
        del stack, sr
    del fine
    out *= np.float32(1 / len(runs))
    made = _maps(out, spread, scan01, volume, ax, factor, hi - lo, profile) if maps else None
    del scan01
    denormalise(out, lo, hi, in_place=True)
    hr = volume.regridded(out, ax, factor, along=(ax,))
    facts = dict(direction="through-plane", axis=ax, axis_name=geometry.AXIS_NAMES[ax], scale=1, factor=factor,
                 input_shape=list(data.shape), output_shape=list(hr.data.shape),
                 input_spacing=[float(s) for s in volume.spacing], output_spacing=[float(s) for s in hr.spacing],
                 intensity_range=[lo, hi], network_ceiling=ceiling, seconds=time.perf_counter() - t0, slices=total,
                 device=str(runner.device), precision=runner.precision, engine=runner.engine,
                 precision_why=runner.choice.why, consistency="none", self_ensemble=False,
                 model=model_provenance(model), plan=plan.as_facts())
    if made is not None:
        stacks, facts["data_consistency"], facts["uncertainty"], facts["reacquired_with"] = made
        hr.maps = {name: hr.map_of(m, what) for name, (m, what) in stacks.items()}
    hr.meta["description"] = describe_output(facts)
    return hr, facts


def _maps(out01: np.ndarray, spread: np.ndarray, scan01: np.ndarray, volume: Volume, ax: int, factor: float,
          span: float, profile: str):
    """The two maps from the output, the orientations' difference and the scan (all in [0, 1]
    units; `spread` is overwritten), as ({name: (array in input units, what)}, consistency
    summary, uncertainty summary, how the output was re-acquired); `span`: the input's range."""
    n, n_fine = scan01.shape[ax], out01.shape[ax]
    ratio, source = slice_thickness_ratio(volume, ax)
    reacquire = profile_matrix(n_fine, factor, ratio * factor, profile, n_coarse=n)
    residual = along(reacquire, out01, ax)
    residual -= scan01
    network = consistency_step.summarise(residual, scan01 > consistency_step.SIGNAL)
    residual *= np.float32(span)
    consistency = np.take(residual, nearest_coarse(n_fine, factor, n), axis=ax)
    del residual
    np.abs(spread, out=spread)
    spread *= np.float32(0.5)
    uncertainty = consistency_step.summarise_spread(spread)
    spread *= np.float32(span)
    how = (f"{profile} profile, {ratio * float(volume.spacing[ax]):.3g} mm thick"
           f"{' (header)' if source == 'header' else ': the spacing, the header has no thickness'}")
    stacks = {"consistency": (consistency, f"output re-acquired ({how}) minus input, input units"),
              "uncertainty": (spread, "spread of the two orientations' estimates |a - b| / 2, input units")}
    return stacks, {"network": network}, uncertainty, how


def check_model(model) -> None:
    """Across the slices runs an x1 model: refused in one line before anything is planned or run."""
    if model.scale != 1:
        raise MRSuperResError(f"through-plane super-resolution needs an x1 through-plane model (such as "
                              f"{THICK_DEFAULT_MODEL}), not an x{model.scale} one")
