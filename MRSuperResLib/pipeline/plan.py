"""The plan of a run, made once and shown before it starts: direction, slice axis, factor, output
grid, file size, time and warnings. The CLI, the panel and the child job hand the same Plan to the
pipeline, which never chooses again; `describe_output` is the line the output file carries."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..engine.limits import check_slice_size
from ..errors import MRSuperResError
from ..options import AUTO_FINEST_MM, CONSISTENCY_FALLBACK, DIRECTIONS, LONG_RUN_S
from ..scans import geometry
from ..scans.sizes import check_output_size
from ..scans.slice_profile import factor_of, fine_count

THICK_RATIO = 1.5           # auto: through-plane when the slices are this much coarser than the plane
FINE_MM = 1.0               # at or below this, a plane is already fine: say so before making it finer
BIG_FILE_BYTES = 1 << 30
MAX_SLICE_FACTOR = 32       # through-plane: the finest --spacing is the slice spacing / 32 (7 mm slices -> 0.22 mm)


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
    output_dtype: str = "float32"           # what the file holds (--dtype input keeps the input's type)
    orientations: int | None = None         # through-plane: planes of 1 or 2 orientations (None: decided when timed)

    def summary(self) -> str:
        sp = " x ".join(f"{s:.3g}" for s in self.output_spacing)
        eta = f", about {duration_text(self.seconds)}" if self.seconds is not None else ""
        runs = {1: ", one orientation of planes", 2: ", two orientations of planes"}.get(self.orientations, "")
        return (f"{self.direction} x{self.factor:g} along {geometry.AXIS_NAMES[self.axis]} ({self.why}): "
                f"{self.input_shape} -> {self.output_shape} voxels of {sp} mm, "
                f"{self.output_bytes / 2**20:.0f} MB as {self.output_dtype}{eta}{runs}")

    def as_facts(self) -> dict:
        return asdict(self)

    def timed(self, seconds_per_voxel: float) -> Plan:
        """This plan with its time: the network's output voxels at `seconds_per_voxel` each. Across
        thick slices with the orientations left to auto, two orientations (0.4 dB better than one on
        Colin27 at 5 mm) unless that would take longer than LONG_RUN_S; then one, said in a warning."""
        if self.direction == "through-plane" and self.orientations is None:
            two = network_voxels(self.direction, self.output_shape, 2) * seconds_per_voxel
            self.orientations = 2 if two <= LONG_RUN_S else 1
            if self.orientations == 1:
                self.warnings.append(f"one orientation of planes, to save time (two would take about "
                                     f"{duration_text(two)}: --orientations 2)")
        self.seconds = network_voxels(self.direction, self.output_shape, self.runs()) * seconds_per_voxel
        return self

    def runs(self) -> int:
        """Orientations of planes the network runs: 1 in-plane; across thick slices as decided (2 untimed)."""
        return 1 if self.direction != "through-plane" else (self.orientations or 2)

    @classmethod
    def from_facts(cls, facts: dict) -> Plan:
        """The plan `as_facts` wrote (a child job receives its plan so)."""
        return cls(**facts)


def network_voxels(direction: str, output_shape, orientations: int = 2) -> int:
    """Output voxels the network makes: through-plane runs every plane in each orientation."""
    return (orientations if direction == "through-plane" else 1) * int(np.prod(output_shape))


def duration_text(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _in_plane_spacing(sp: np.ndarray, axis: int) -> float:
    return float(max(sp[a] for a in geometry.in_plane_axes(axis)))


def choose_direction(volume, direction: str = "auto", axis="auto",
                     model_scale: int | None = None) -> tuple[str, int, str]:
    """(direction, slice axis, why). auto: through-plane when the slice spacing is at least
    THICK_RATIO times the in-plane spacing, else in-plane; but a model given by the user decides
    (x1: through-plane, else in-plane), as naming an x4 model always meant in-plane. Refuses
    through-plane where the slices are not thicker than the plane, or where there is one slice."""
    if direction not in DIRECTIONS:
        raise MRSuperResError(f"unknown direction '{direction}' ({', '.join(DIRECTIONS)})")
    if direction == "auto" and model_scale is not None:
        chosen = "through-plane" if model_scale == 1 else "in-plane"
        _, ax, _ = _direction(volume, chosen, axis)
        return chosen, ax, f"auto: the model given is x{model_scale}"
    return _direction(volume, direction, axis)


def _direction(volume, direction: str, axis) -> tuple[str, int, str]:
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


def check_orientations(orientations: int | None, maps: bool) -> None:
    """Across thick slices the uncertainty map is the spread of the two orientations: --maps with
    one is refused in one line (the CLI asks before a model is loaded; through_plane again)."""
    if maps and orientations == 1:
        raise MRSuperResError("the uncertainty map across thick slices is the spread of the two orientations: "
                              "--maps needs --orientations 2 (or auto)")


def default_spacing(volume, axis: int) -> float:
    """Through-plane's target spacing when none is given: the finest in-plane spacing, but no finer
    than AUTO_FINEST_MM where that still makes the slices THICK_RATIO times finer. A 0.41 x 0.41 x
    1.5 mm MPRAGE is made 0.75 mm apart (x2), not 0.41 mm (x3.7: 1.8x the voxels and the time);
    5 mm slices over a 1 mm or 0.88 mm plane still become isotropic."""
    sp = volume.spacing
    plane = float(min(sp[a] for a in geometry.in_plane_axes(axis)))
    floor = max(plane, AUTO_FINEST_MM)
    return floor if floor <= float(sp[axis]) / THICK_RATIO else plane


def target_factor(volume, axis: int, spacing: float | None) -> float:
    """The factor along the slice axis for a target spacing (default: default_spacing)."""
    sp = volume.spacing
    target = default_spacing(volume, axis) if spacing is None else float(spacing)
    if not target > 0:
        raise MRSuperResError(f"--spacing must be positive, not {spacing}")
    factor = factor_of(sp[axis], target)
    if factor <= 1:
        raise MRSuperResError(f"the target spacing {target:.4g} mm is not finer than the slice spacing "
                              f"{sp[axis]:.4g} mm")
    if factor > MAX_SLICE_FACTOR:
        raise MRSuperResError(f"the target spacing {target:.4g} mm is {factor:.0f}x finer than the slice spacing "
                              f"{sp[axis]:.4g} mm: at most {MAX_SLICE_FACTOR}x ({sp[axis] / MAX_SLICE_FACTOR:.3g} mm)")
    return factor


def check_spacing(volume, direction: str, axis: int, spacing: float | None) -> None:
    """--spacing as the plan will take it, refused in one line (the CLI asks before it looks up a
    model): only across the slices, positive, and finer than the slice spacing."""
    if direction == "through-plane":
        target_factor(volume, axis, spacing)
    elif spacing is not None:
        raise MRSuperResError("--spacing applies to --direction through-plane (in-plane uses the model's scale)")


def make_plan(volume, direction: str, axis: int, why: str, scale: int = 4, spacing: float | None = None,
              seconds_per_voxel: float | None = None, dtype: str = "float32",
              orientations: int | None = None) -> Plan:
    """Output shape, voxel size, file size (as `dtype`), time (where the per-voxel cost is known) and
    warnings. An output larger than the limit or the memory available is refused here, before
    anything is allocated (a --spacing of 0.0001 mm would ask for hundreds of gigabytes)."""
    shape, sp = list(volume.data.shape), volume.spacing
    out_shape, out_sp = list(shape), [float(s) for s in sp]
    warnings = []
    if direction == "through-plane":
        if min(shape) < 2:
            raise MRSuperResError(f"a 2D image ({shape} voxels) has no slices to super-resolve across")
        factor = target_factor(volume, axis, spacing)
        out_shape[axis] = fine_count(shape[axis], factor)
        out_sp[axis] = sp[axis] / factor
        if sp[axis] <= FINE_MM + 1e-6:
            warnings.append(f"the slices are already {sp[axis]:.3g} mm apart: through-plane super-resolution "
                            "adds little at or below 1 mm")
        plane = min(sp[a] for a in geometry.in_plane_axes(axis))
        if spacing is None and out_sp[axis] > plane * (1 + 1e-6):
            finer = int(np.prod(shape, dtype=np.int64)) * fine_count(shape[axis], factor_of(sp[axis], plane)) \
                // shape[axis]
            warnings.append(f"slices made {out_sp[axis]:.3g} mm apart, the default (no finer than "
                            f"{AUTO_FINEST_MM:g} mm): --spacing {plane:.3g} for isotropic voxels "
                            f"({finer / int(np.prod(out_shape, dtype=np.int64)):.1f}x the voxels and the time)")
    else:
        check_spacing(volume, direction, axis, spacing)
        check_slice_size(*(shape[a] for a in geometry.in_plane_axes(axis)))    # before the plan is shown
        factor = float(scale)
        for a in geometry.in_plane_axes(axis):
            out_shape[a], out_sp[a] = shape[a] * scale, sp[a] / scale
        plane = [sp[a] for a in geometry.in_plane_axes(axis)]
        if max(plane) <= FINE_MM + 1e-6:
            warnings.append(f"the planes are already {plane[0]:.3g} x {plane[1]:.3g} mm: x{scale} in-plane makes "
                            f"{plane[0] / scale:.3g} mm voxels and a {scale * scale}x larger file")
        if min(shape) >= 2 and sp[axis] >= THICK_RATIO * max(plane):
            warnings.append(f"the {sp[axis]:.3g} mm slices stay as they are: --direction through-plane (the "
                            "through-plane model) makes them finer")
    check_output_size(out_shape, f" (--spacing {spacing:g} mm is too fine?)" if spacing is not None else "")
    out_bytes = np.dtype(dtype).itemsize * int(np.prod(out_shape, dtype=np.int64))
    if out_bytes > BIG_FILE_BYTES:
        warnings.append(f"the output is {out_bytes / 2**30:.1f} GB")
    if orientations not in (None, 1, 2):
        raise MRSuperResError(f"--orientations must be 1, 2 or auto, not {orientations}")
    plan = Plan(direction, axis, factor, why, shape, [float(s) for s in sp], out_shape, out_sp, out_bytes,
                None, warnings, dtype, orientations if direction == "through-plane" else None)
    return plan.timed(seconds_per_voxel) if seconds_per_voxel else plan



def describe_output(facts: dict) -> str:
    """The line an output file carries (NIfTI descrip, NRRD content): what made it."""
    model = facts["model"]
    sha = f" sha256:{model['sha256'][:12]}" if model.get("sha256") else ""
    how = f"through-plane x{facts['factor']:.3g}" if facts.get("direction") == "through-plane" else f"x{facts['scale']}"
    mode = facts.get("consistency", "none")
    return (f"MRSuperRes {model['name']} {how}{sha}"
            f"{'' if mode == CONSISTENCY_FALLBACK or facts.get('direction') == 'through-plane' else ' ' + mode}")
