"""The grid rule that ties low- and high-resolution volumes together.

Slices are taken perpendicular to `axis`; the two in-plane axes are resampled by `scale`.
HR voxel i' sits at LR continuous index (i' + 0.5) / s - 0.5 (pixel centres aligned, the
`align_corners=False` convention), so both grids cover the same physical extent: in-plane
spacing divided by s, direction unchanged, origin moved by -(s - 1) / (2 s) LR voxels. The
inverse (HR -> simulated LR) puts LR voxel j at HR continuous index s j + (s - 1) / 2.
"""
from __future__ import annotations

import numpy as np

from ..errors import MRSuperResError

AXIS_NAMES = {0: "sagittal (i)", 1: "coronal (j)", 2: "axial (k)"}


def spacing(affine: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)


def axial_axis(affine: np.ndarray) -> int:
    """The voxel axis closest to the superior direction (RAS z)."""
    directions = np.asarray(affine)[:3, :3] / spacing(affine)
    return int(np.argmax(np.abs(directions[2])))


def choose_axis(axis: str | int, affine: np.ndarray, shape: tuple | None = None) -> int:
    """The slice axis: slices perpendicular to it are super-resolved in-plane.

    `auto` = the axis with the largest spacing (the slice axis of a 2D acquisition). When the
    two largest spacings are equal (within 1%), the slices lie in their plane, so the third
    axis is the slice axis (a volume degraded in-plane, e.g. 4 x 4 x 1 mm). Isotropic
    volumes use the axis closest to axial. A volume one voxel thick along an axis (a single
    slice) is sliced along that axis.
    """
    if isinstance(axis, str) and axis.strip() in ("0", "1", "2"):
        axis = int(axis)
    if axis in (0, 1, 2) and not isinstance(axis, bool):
        return int(axis)
    if axis not in ("auto", None):
        raise MRSuperResError(f"axis must be auto, 0, 1 or 2, not {axis!r}")
    if shape is not None and sum(n == 1 for n in shape) == 1:
        return int(list(shape).index(1))
    sp = spacing(affine)
    order = np.argsort(sp)[::-1]                   # largest spacing first
    same = lambda a, b: abs(sp[a] - sp[b]) <= 0.01 * max(sp[a], sp[b])  # noqa: E731
    if same(order[0], order[1]):
        return axial_axis(affine) if same(order[1], order[2]) else int(order[2])
    return int(order[0])


def in_plane_axes(axis: int) -> tuple[int, int]:
    return tuple(a for a in range(3) if a != axis)  # type: ignore[return-value]


def resample_affine(affine: np.ndarray, axis: int, factor: float, along: tuple | None = None) -> np.ndarray:
    """Affine of the grid whose in-plane spacing (or the spacing of the axes `along`, e.g. the
    slice axis for through-plane super-resolution) is the old one divided by `factor`.

    factor = s gives the HR grid of an LR volume; factor = 1/s the LR grid of an HR volume.
    New voxel i' sits at old continuous index (i' + 0.5) / factor - 0.5.
    """
    m = np.eye(4)
    for a in (in_plane_axes(axis) if along is None else along):
        m[a, a] = 1.0 / factor
        m[a, 3] = 0.5 / factor - 0.5
    return np.asarray(affine, dtype=np.float64) @ m


def slices_first(data: np.ndarray, axis: int) -> np.ndarray:
    """(N, H, W) view of the slices perpendicular to `axis` (H, W in increasing axis order)."""
    return np.moveaxis(data, axis, 0)


def slices_back(stack: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(stack, 0, axis)
