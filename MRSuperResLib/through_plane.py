"""Super-resolution across the slices of a thick-slice scan, and the plan shown before any run.

Most clinical brain MRI is 2D: about 1 mm in the plane, 4-6 mm between slices. Making the
planes finer (in-plane, x4) leaves the thick-slice blur and makes a file 16x larger; what such a
scan needs is finer spacing along the slice axis. Method (after SMORE and ECLARE, with the
project's 1-channel RRDBNet at x1):

1. cubic interpolation along the slice axis onto the target spacing (slice_profile);
2. the x1 network over every plane that contains the slice axis, in both orientations
   (slice axis as image rows, as in training), undoing the slice-profile blur;
3. the two estimates averaged. Each is equally valid; the average halves their independent
   errors. SMORE's Fourier burst accumulation keeps, per frequency, the larger magnitude of the
   two, which also keeps the larger of two noise draws.

The model learns the slice profile from in-plane slices degraded along one direction only
(slice_profile.training_pair); `train --self` fine-tunes it on the scan's own in-plane slices.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import geometry
from .errors import MRSuperResError
from .slice_profile import factor_of, fine_count, interpolate
from .volumes import Volume, check_voxels, denormalise, intensity_range, normalise

DIRECTIONS = ("auto", "in-plane", "through-plane")
THICK_RATIO = 1.5           # auto: through-plane when the slices are this much coarser than the plane
FINE_MM = 1.0               # at or below this, a plane is already fine: say so before making it finer
BIG_FILE_BYTES = 1 << 30


@dataclass
class Plan:
    """What a run will do, said before it starts (CLI and panel)."""
    direction: str
    axis: int
    factor: float
    why: str
    input_shape: list
    input_spacing: list
    output_shape: list
    output_spacing: list
    output_bytes: int
    seconds: float | None = None
    warnings: list = field(default_factory=list)

    def summary(self) -> str:
        sp = " x ".join(f"{s:.3g}" for s in self.output_spacing)
        eta = f", about {duration_text(self.seconds)}" if self.seconds is not None else ""
        return (f"{self.direction} x{self.factor:g} along {geometry.AXIS_NAMES[self.axis]} ({self.why}): "
                f"{self.input_shape} -> {self.output_shape} voxels of {sp} mm, "
                f"{self.output_bytes / 2**20:.0f} MB as float32{eta}")

    def as_facts(self) -> dict:
        return asdict(self)


def duration_text(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _in_plane_spacing(sp: np.ndarray, axis: int) -> float:
    return float(max(sp[a] for a in geometry.in_plane_axes(axis)))


def choose_direction(volume: Volume, direction: str = "auto", axis="auto",
                     model_scale: int | None = None) -> tuple[str, int, str]:
    """(direction, slice axis, why). auto: through-plane when the slice spacing is at least
    THICK_RATIO times the in-plane spacing, else in-plane; but a model given by the user decides
    (x1: through-plane, else in-plane), as naming an x4 model always meant in-plane. Refuses
    through-plane where the slices are not thicker than the plane, or where there is one slice."""
    if direction not in DIRECTIONS:
        raise MRSuperResError(f"unknown direction '{direction}' ({', '.join(DIRECTIONS)})")
    if direction == "auto" and model_scale is not None:
        chosen = "through-plane" if model_scale == 1 else "in-plane"
        _, ax, _ = choose_direction(volume, chosen, axis)
        return chosen, ax, f"auto: the model given is x{model_scale}"
    shape = volume.data.shape
    ax = geometry.choose_axis(axis, volume.affine, shape)
    sp = volume.spacing
    slice_mm, plane_mm = float(sp[ax]), _in_plane_spacing(sp, ax)
    ratio = slice_mm / plane_mm
    thick = f"slices {slice_mm:.3g} mm apart, plane {plane_mm:.3g} mm"
    if direction == "through-plane":
        if min(shape) < 2:
            raise MRSuperResError(f"a 2D image ({list(shape)} voxels) has no slices to super-resolve across: "
                                  "use --direction in-plane")
        if ratio <= 1 + 1e-3:
            raise MRSuperResError(f"the slices are not thicker than the plane ({thick}): nothing to "
                                  "super-resolve across them (use --direction in-plane)")
        return "through-plane", ax, "asked for"
    if direction == "in-plane":
        return "in-plane", ax, "asked for"
    if min(shape) >= 2 and ratio >= THICK_RATIO:
        return "through-plane", ax, f"auto: {thick}"
    return "in-plane", ax, f"auto: {thick}" if ratio > 1 + 1e-3 else "auto: the slices are not thicker than the plane"


def target_factor(volume: Volume, axis: int, spacing: float | None) -> float:
    """The factor along the slice axis for a target spacing (default: the finest in-plane one)."""
    sp = volume.spacing
    target = float(min(sp[a] for a in geometry.in_plane_axes(axis))) if spacing is None else float(spacing)
    if not target > 0:
        raise MRSuperResError(f"--spacing must be positive, not {spacing}")
    factor = factor_of(sp[axis], target)
    if factor <= 1:
        raise MRSuperResError(f"the target spacing {target:.4g} mm is not finer than the slice spacing "
                              f"{sp[axis]:.4g} mm")
    return factor


def make_plan(volume: Volume, direction: str, axis: int, why: str, scale: int = 4, spacing: float | None = None,
              seconds_per_voxel: float | None = None) -> Plan:
    """Output shape, voxel size, file size, time (where the per-voxel cost is known) and warnings."""
    shape, sp = list(volume.data.shape), volume.spacing
    out_shape, out_sp = list(shape), [float(s) for s in sp]
    warnings = []
    if direction == "through-plane":
        if min(shape) < 2:
            raise MRSuperResError(f"a 2D image ({shape} voxels) has no slices to super-resolve across")
        factor = target_factor(volume, axis, spacing)
        out_shape[axis] = fine_count(shape[axis], factor)
        out_sp[axis] = sp[axis] / factor
        network_voxels = 2 * int(np.prod(out_shape))          # both orientations
        if sp[axis] <= FINE_MM + 1e-6:
            warnings.append(f"the slices are already {sp[axis]:.3g} mm apart: through-plane super-resolution "
                            "adds little at or below 1 mm")
    else:
        if spacing is not None:
            raise MRSuperResError("--spacing applies to --direction through-plane (in-plane uses the model's scale)")
        from .inference import check_slice_size
        check_slice_size(*(shape[a] for a in geometry.in_plane_axes(axis)))    # before the plan is shown
        factor = float(scale)
        for a in geometry.in_plane_axes(axis):
            out_shape[a], out_sp[a] = shape[a] * scale, sp[a] / scale
        network_voxels = int(np.prod(out_shape))
        plane = [sp[a] for a in geometry.in_plane_axes(axis)]
        if max(plane) <= FINE_MM + 1e-6:
            warnings.append(f"the planes are already {plane[0]:.3g} x {plane[1]:.3g} mm: x{scale} in-plane makes "
                            f"{plane[0] / scale:.3g} mm voxels and a {scale * scale}x larger file")
        if min(shape) >= 2 and sp[axis] >= THICK_RATIO * max(plane):
            warnings.append(f"the {sp[axis]:.3g} mm slices stay as they are: --direction through-plane (the "
                            "through-plane model) makes them finer")
    out_bytes = 4 * int(np.prod(out_shape))
    if out_bytes > BIG_FILE_BYTES:
        warnings.append(f"the output is {out_bytes / 2**30:.1f} GB")
    seconds = network_voxels * seconds_per_voxel if seconds_per_voxel else None
    return Plan(direction, axis, factor, why, shape, [float(s) for s in sp], out_shape, out_sp, out_bytes,
                seconds, warnings)


def check_network(engine) -> None:
    """One small pass, so that weights which give NaN are refused in one line before the plan is
    shown (a few milliseconds: 16 x 16 input pixels)."""
    engine.forward(np.full((1, 16, 16), 0.5, np.float32))


def seconds_per_output_voxel(engine) -> float:
    """This engine's cost per output voxel: the calibration's figure for the path it runs where
    there is one (no extra work), else timed on one 256 x 256-output slice after a warm-up."""
    from .calibration import CALIBRATION_SLICE, label_of

    measured = engine.choice.measured.get(label_of(engine.engine, engine.precision)) or {}
    if 0 < measured.get("seconds_per_slice", float("inf")) < float("inf"):
        return measured["seconds_per_slice"] / (CALIBRATION_SLICE[0] * CALIBRATION_SLICE[1] * engine.scale ** 2)
    side = max(16, 256 // engine.scale)
    x = np.full((1, side, side), 0.5, np.float32)
    engine.forward(x)
    t0 = time.perf_counter()
    engine.forward(x)
    return (time.perf_counter() - t0) / (side * engine.scale) ** 2


def enhance_through_plane(volume: Volume, model, *, axis="auto", spacing: float | None = None,
                          device: str = "auto", batch_size: int | None = None, precision: str = "auto",
                          tile: int | None = None, progress=None, cancel=None, notify=None,
                          engine: str = "auto", plan: Plan | None = None, runner=None) -> tuple[Volume, dict]:
    """A thick-slice volume on a grid `factor` times finer along its slice axis (same extent, the
    geometry's rule); returns (volume in input units, run facts). `runner`: a SliceEngine already
    made (the CLI times it for the plan). Never anchored: holding the output's local brightness to
    the cubic input undoes most of the deblurring (on held-out Colin27 at 5 mm, +0.4 dB over cubic
    anchored against +1.5 dB not)."""
    from .cards import model_provenance
    from .inference import SliceEngine, describe_output, super_resolve_slices

    if model.scale != 1:
        raise MRSuperResError(f"through-plane super-resolution needs an x1 through-plane model (such as "
                              f"mri-thick-x1), not an x{model.scale} one")
    data = check_voxels(volume.data, volume.meta.get("path", "volume"))
    if plan is None:
        direction, ax, why = choose_direction(volume, "through-plane", axis)
        plan = make_plan(volume, direction, ax, why, spacing=spacing)
    ax, factor = plan.axis, plan.factor
    runner = runner or SliceEngine(model, device=device, precision=precision, notify=notify, engine=engine)
    t0 = time.perf_counter()
    lo, hi = intensity_range(data)
    fine = interpolate(normalise(data, (lo, hi)), ax, factor)
    b, c = geometry.in_plane_axes(ax)
    out = np.zeros(fine.shape, np.float32)
    total, done = fine.shape[b] + fine.shape[c], 0
    for other, rest in ((b, c), (c, b)):
        # planes perpendicular to `other`, the slice axis as rows (as the network was trained)
        order = (other, ax, rest)
        stack = np.ascontiguousarray(np.moveaxis(fine, order, (0, 1, 2)))
        report = (lambda d, n, offset=done: progress(offset + d, total)) if progress else None
        sr = super_resolve_slices(runner, stack, batch_size=batch_size, tile=tile, progress=report,
                                  cancel=cancel, consistency="none")
        out += np.moveaxis(sr, (0, 1, 2), order)
        done += stack.shape[0]
        del stack, sr
    out *= 0.5
    denormalise(out, lo, hi, in_place=True)
    hr = volume.regridded(out, ax, factor, along=(ax,))
    facts = dict(direction="through-plane", axis=ax, axis_name=geometry.AXIS_NAMES[ax], scale=1, factor=factor,
                 input_shape=list(data.shape), output_shape=list(hr.data.shape),
                 input_spacing=[float(s) for s in volume.spacing], output_spacing=[float(s) for s in hr.spacing],
                 intensity_range=[lo, hi], seconds=time.perf_counter() - t0, slices=total,
                 device=str(runner.device), precision=runner.precision, engine=runner.engine,
                 precision_why=runner.choice.why, consistency="none", self_ensemble=False,
                 model=model_provenance(model), plan=plan.as_facts())
    hr.meta["description"] = describe_output(facts)
    return hr, facts
