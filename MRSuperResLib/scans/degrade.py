"""Low-resolution versions of a volume on their exact grids: in-plane (cropped to whole LR voxels,
then degraded slice by slice) and across the slices (thick slices of a slice profile), for
evaluate, compare and the command `degrade`."""
from __future__ import annotations

import numpy as np

from ..errors import MRSuperResError
from . import geometry
from .resample import check_scale, downsample
from .slice_profile import coarse_count, factor_of, fine_count, simulate_thick
from .volumes import Volume


def crop_to_multiple(volume, scale: int, axis: int):
    """The volume without its trailing in-plane voxels beyond a multiple of `scale` (the origin
    voxel, so the affine, unchanged): the part an x`scale` LR grid covers."""
    data = volume.data
    crop = [slice(None)] * 3
    for a in geometry.in_plane_axes(axis):
        n = data.shape[a] - data.shape[a] % scale
        if n < scale:
            raise MRSuperResError(f"axis {a} has {data.shape[a]} voxels: too few for x{scale}")
        crop[a] = slice(0, n)
    return Volume(np.ascontiguousarray(data[tuple(crop)]), volume.affine, volume.meta)


def degrade_volume(volume, scale: int, method: str, axis: int):
    """A simulated LR volume on the matching LR grid (trailing voxels beyond a multiple of s
    are cropped), intensities in the input's units and range."""
    check_scale(scale)
    stack = geometry.slices_first(crop_to_multiple(volume, scale, axis).data, axis)
    lr = np.clip(downsample(stack, scale, method), volume.data.min(), volume.data.max())
    return volume.regridded(geometry.slices_back(lr, axis), axis, 1.0 / scale)


def thick_factor(volume: Volume, axis: int, thickness_mm: float, name: str = "") -> float:
    """How many fine voxels one simulated `thickness_mm` slice spans along `axis`; refused in one
    line when the thickness is not positive, not thicker than the spacing, or makes fewer than two
    slices of the volume."""
    where = f"{name}: " if name else ""
    if not thickness_mm > 0:
        raise MRSuperResError(f"--thickness must be positive, not {thickness_mm}")
    spacing = float(volume.spacing[axis])
    factor = factor_of(thickness_mm, spacing)
    if factor <= 1:
        raise MRSuperResError(f"{where}--thickness {thickness_mm:g} mm is not thicker than the {spacing:.3g} mm "
                              f"spacing along axis {axis}")
    if coarse_count(volume.data.shape[axis], factor) < 2:
        raise MRSuperResError(f"{where}{volume.data.shape[axis]} voxels along axis {axis} make fewer than two "
                              f"{thickness_mm:g} mm slices")
    return factor


def whole_slices(volume: Volume, axis: int, factor: float) -> Volume:
    """The volume cut, at its far end along `axis`, to the extent of whole thick slices (the grid
    a thick-slice simulation of it lands back on)."""
    n = fine_count(coarse_count(volume.data.shape[axis], factor), factor)
    return Volume(np.take(volume.data, np.arange(n), axis=axis), volume.affine, dict(volume.meta))


def simulate_thick_volume(volume: Volume, axis: int, thickness_mm: float, profile: str = "gaussian") -> Volume:
    """A thick-slice volume from a fine one: slices `thickness_mm` apart and thick along `axis`,
    on the coarse grid whose through-plane enhancement lands back on the fine one."""
    factor = thick_factor(volume, axis, thickness_mm)
    data = simulate_thick(volume.data, axis, factor, factor, profile)
    meta = {k: v for k, v in volume.meta.items() if k in ("path", "dtype", "xyzt_units")}
    thick = Volume(data, geometry.resample_affine(volume.affine, axis, 1 / factor, along=(axis,)), meta)
    thick.meta["thicknesses"] = [float("nan")] * 3
    thick.meta["thicknesses"][axis] = float(thickness_mm)
    return thick
