"""Thick slices along one axis: how a 2D acquisition samples it, and cubic interpolation back.

Both are linear maps along one axis, built as small matrices and applied with one matrix
product, so they work for any factor (4.4 mm over 0.88 mm, 2.5x, ...) with the project's one
grid rule (geometry): along the slice axis, fine voxel i' sits at coarse continuous index
(i' + 0.5) / f - 0.5, so coarse voxel j is centred on fine index f j + (f - 1) / 2 and both grids
cover the same extent.

A thick slice is the fine signal weighted by the slice profile centred on the slice: a
Gaussian or a rectangle (boxcar) whose full width at half maximum is the slice thickness, in
fine voxels. A thickness below the spacing leaves gaps between slices, as 2D protocols do.
Each weight is the profile integrated over one fine voxel; weights cut off at the volume's
ends are renormalised.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import MRSuperResError
from ..options import SLICE_PROFILES as PROFILES

CUBIC_A = -0.5                       # Keys' cubic with a = -0.5 (Catmull-Rom): exact for quadratics
COUNT_TOLERANCE = 1e-4               # float32 spacings: 60 slices 2.00000009 mm apart at 2.4999998x are 24 whole
                                     # slices, and those 24 cover 60 fine ones again (1e-6 made it 59, then 57)


def factor_of(coarse: float, fine: float) -> float:
    """coarse / fine spacing, snapped to the integer within 1e-6 (4.4 / 0.88 is exactly 5)."""
    f = float(coarse) / float(fine)
    return float(round(f)) if abs(f - round(f)) < 1e-6 else f


def fine_count(n: int, factor: float) -> int:
    """Fine voxels covering n coarse ones: floor(n f) (n f when f is an integer)."""
    return int(math.floor(n * factor + COUNT_TOLERANCE))


def coarse_count(n: int, factor: float) -> int:
    """Whole coarse voxels inside n fine ones."""
    return int(math.floor(n / factor + COUNT_TOLERANCE))


def _profile_mass(a: np.ndarray, b: np.ndarray, width: float, profile: str) -> np.ndarray:
    """Integral of the unit-area profile of FWHM `width` over [a, b] (arrays, profile centred at 0)."""
    if profile == "rect":
        lo, hi = np.maximum(a, -width / 2), np.minimum(b, width / 2)
        return np.clip(hi - lo, 0, None) / width
    sigma = width / (2 * math.sqrt(2 * math.log(2)))
    from scipy.special import erf
    return 0.5 * (erf(b / (sigma * math.sqrt(2))) - erf(a / (sigma * math.sqrt(2))))


def profile_matrix(n_fine: int, factor: float, thickness: float, profile: str = "gaussian",
                   n_coarse: int | None = None) -> np.ndarray:
    """(n_coarse, n_fine): coarse slice j = the fine signal weighted by the slice profile (FWHM
    `thickness` fine voxels) centred on fine index factor j + (factor - 1) / 2. `n_coarse`
    defaults to the whole slices inside the fine grid; a scan's own count (a fine grid of
    floor(n f) voxels may cut its last slice short) re-acquires every one of its slices."""
    if profile not in PROFILES:
        raise MRSuperResError(f"unknown slice profile '{profile}' ({', '.join(PROFILES)})")
    if not thickness > 0:
        raise MRSuperResError(f"the slice thickness must be positive, not {thickness}")
    n_coarse = coarse_count(n_fine, factor) if n_coarse is None else n_coarse
    if n_coarse < 2:
        raise MRSuperResError(f"{n_fine} voxels make fewer than 2 slices {factor:g} voxels apart")
    centres = factor * np.arange(n_coarse) + (factor - 1) / 2
    edges = np.arange(n_fine)[None, :] - centres[:, None]
    m = _profile_mass(edges - 0.5, edges + 0.5, thickness, profile)
    return (m / m.sum(1, keepdims=True)).astype(np.float64)


def _keys(t: np.ndarray) -> np.ndarray:
    a, t = CUBIC_A, np.abs(t)
    return np.where(t <= 1, (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1,
                    np.where(t < 2, a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a, 0.0))


def cubic_matrix(n_coarse: int, factor: float, n_fine: int | None = None, kind: str = "cubic") -> np.ndarray:
    """(n_fine, n_coarse): cubic (or linear) interpolation onto the fine grid (edge voxels
    repeated beyond the ends); n_fine defaults to fine_count(n_coarse, factor)."""
    n_fine = fine_count(n_coarse, factor) if n_fine is None else n_fine
    src = (np.arange(n_fine) + 0.5) / factor - 0.5
    base = np.floor(src).astype(int)
    m = np.zeros((n_fine, n_coarse))
    rows = np.arange(n_fine)
    kernel = _keys if kind == "cubic" else (lambda t: np.clip(1 - np.abs(t), 0, None))
    for k in range(-1, 3):
        np.add.at(m, (rows, np.clip(base + k, 0, n_coarse - 1)), kernel(src - (base + k)))
    return m


def nearest_coarse(n_fine: int, factor: float, n_coarse: int) -> np.ndarray:
    """For each fine index, the coarse slice it lies in (the grid rule, rounded to the nearest)."""
    return np.clip(np.floor((np.arange(n_fine) + 0.5) / factor), 0, n_coarse - 1).astype(int)


def along(matrix: np.ndarray, data: np.ndarray, axis: int) -> np.ndarray:
    """Apply a (new, old) matrix along `axis` of `data` (float32 out)."""
    moved = np.moveaxis(np.asarray(data, dtype=np.float32), axis, 0)
    out = np.tensordot(matrix.astype(np.float32), moved, axes=(1, 0))
    return np.ascontiguousarray(np.moveaxis(out, 0, axis))


def simulate_thick(data: np.ndarray, axis: int, factor: float, thickness: float | None = None,
                   profile: str = "gaussian") -> np.ndarray:
    """Thick slices `factor` voxels apart along `axis` from fine data (thickness in fine voxels,
    default the spacing: contiguous slices)."""
    return along(profile_matrix(data.shape[axis], factor, thickness or factor, profile), data, axis)


def interpolate(data: np.ndarray, axis: int, factor: float, n_fine: int | None = None,
                kind: str = "cubic") -> np.ndarray:
    """Cubic (or linear) interpolation along `axis` onto a grid `factor` times finer."""
    return along(cubic_matrix(data.shape[axis], factor, n_fine, kind), data, axis)


def slice_thickness_ratio(volume, axis: int) -> tuple[float, str]:
    """(thickness / spacing along the slice axis, where it came from): the header's slice
    thickness where it has one (NRRD `thicknesses`), else contiguous slices (1.0)."""
    values = volume.meta.get("thicknesses") or []
    value = values[axis] if len(values) > axis else float("nan")
    if value is not None and math.isfinite(value) and value > 0:
        return value / float(volume.spacing[axis]), "header"
    return 1.0, "spacing (no thickness in the header)"


def training_pair(hr: np.ndarray, rng: np.random.Generator, factors=(2.0, 6.0), thickness=(0.6, 1.0)) -> np.ndarray:
    """The network input for one fine 2D patch (H, W): thick slices along its rows at a random
    factor, profile (Gaussian or rect) and thickness (a fraction of the spacing, in `thickness`;
    below 1: gaps), then
    cubic interpolation back to H rows, the same size as the patch. No noise is added: with
    noisy inputs and (real, noisy) targets the loss is mostly noise and the deblurring is learnt
    several times slower; a scan's own noise is what `train --self` adapts to."""
    factor = float(rng.uniform(*factors))
    width = factor * float(rng.uniform(*thickness))
    profile = PROFILES[int(rng.integers(len(PROFILES)))]
    thick = simulate_thick(hr, 0, factor, width, profile)
    return np.clip(interpolate(thick, 0, factor, hr.shape[0]), 0, 1).astype(np.float32)
