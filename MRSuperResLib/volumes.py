"""3D scalar volumes with their geometry: NIfTI (nibabel) and NRRD (pynrrd), read and written.

A `Volume` holds float32 voxels indexed [i, j, k] and a 4x4 affine from voxel index to RAS
millimetres (nibabel's convention, which is also Slicer's IJKToRAS). NRRD files in LPS are
converted on the way in and written back in LPS, as Slicer writes them. Outputs are written to
a temporary name in the destination folder and renamed when complete.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import MRSuperResError
from .weights import default_file_mode

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
_LPS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Volume:
    data: np.ndarray                     # float32, [i, j, k]
    affine: np.ndarray                   # 4x4 voxel index -> RAS mm
    meta: dict = field(default_factory=dict)

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)


def file_format(path: str | os.PathLike) -> str:
    name = str(path).lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(NRRD_SUFFIXES):
        return "nrrd"
    raise MRSuperResError(f"unsupported file type: {path} (expected .nii, .nii.gz, .nrrd or .nhdr)")


def stem(path: str | os.PathLike) -> str:
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES[::-1] + NRRD_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


# ----------------------------------------------------------------------------- reading

def read_volume(path: str | os.PathLike) -> Volume:
    """Read and validate a 3D scalar volume; every problem becomes one clear MRSuperResError."""
    path = Path(path)
    kind = file_format(path)
    if not path.exists():
        raise MRSuperResError(f"file not found: {path}")
    if path.is_dir():
        raise MRSuperResError(f"expected a volume file, got a folder: {path}")
    try:
        data, affine, meta = _read_nifti(path) if kind == "nifti" else _read_nrrd(path)
    except MRSuperResError:
        raise
    except MemoryError:
        raise MRSuperResError(f"not enough memory to read {path}") from None
    except Exception as exc:  # nibabel/pynrrd/gzip raise many types for damaged files
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise MRSuperResError(f"cannot read {path}: not a valid {kind.upper()} file or truncated ({detail})") from None
    meta["path"] = str(path)
    return Volume(check_voxels(data, path), affine, meta)


def _read_nifti(path: Path):
    import nibabel as nib

    img = nib.load(str(path))
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise MRSuperResError(f"{path} is not a NIfTI image")
    dtype = img.get_data_dtype()
    if dtype.names is not None or dtype.kind == "c":
        raise MRSuperResError(f"{path} is an RGB, vector or complex image ({dtype}): need a single-channel volume")
    shape = _scalar_shape(img.shape, path)
    data = img.get_fdata(dtype=np.float32, caching="unchanged")  # applies scl_slope/inter
    if img.header.get_intent()[0] in ("vector", "rgb vector", "rgba vector"):
        raise MRSuperResError(f"{path} is a vector image (intent {img.header.get_intent()[0]}): need a scalar volume")
    header = img.header
    slope, inter = header.get_slope_inter()
    scaled = slope not in (None, 1.0) or inter not in (None, 0.0)
    meta = dict(format="nifti", dtype="float32" if scaled else str(dtype), qform_code=int(header["qform_code"]),
                sform_code=int(header["sform_code"]), xyzt_units=header.get_xyzt_units())
    return data.reshape(shape), np.asarray(img.affine, dtype=np.float64), meta


def _read_nrrd(path: Path):
    import nrrd

    raw, header = nrrd.read(str(path), index_order="F")
    kinds = [str(k).lower() for k in header.get("kinds", [])]
    non_spatial = [k for k in kinds if k not in ("domain", "space", "time")]
    if non_spatial or raw.dtype.kind == "c":
        raise MRSuperResError(
            f"{path} is an RGB or vector image (kinds {header.get('kinds')}): need a single-channel volume")
    shape = _scalar_shape(raw.shape, path)
    data = np.asarray(raw, dtype=np.float32).reshape(shape)
    affine = np.eye(4)
    directions = header.get("space directions")
    if directions is not None:
        dirs = np.asarray([d for d in directions if d is not None and not np.isnan(np.asarray(d, float)).any()],
                          dtype=np.float64)
        if dirs.shape != (3, 3):
            raise MRSuperResError(f"{path}: space directions {directions} do not describe a 3D grid")
        affine[:3, :3] = dirs.T
        affine[:3, 3] = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
        space = str(header.get("space", "right-anterior-superior")).lower()
        if space in ("left-posterior-superior", "lps"):
            affine[:3] = _LPS @ affine[:3]
        elif space not in ("right-anterior-superior", "ras"):
            raise MRSuperResError(f"{path}: NRRD space '{space}' is not supported (use RAS or LPS)")
    elif "spacings" in header:
        affine[:3, :3] = np.diag(np.asarray(header["spacings"], dtype=np.float64)[:3])
    meta = dict(format="nrrd", dtype=str(raw.dtype))
    return data, affine, meta


def _scalar_shape(shape: tuple, path: Path) -> tuple:
    """The 3D shape of a scalar volume; trailing singleton dimensions are dropped."""
    shape = tuple(int(n) for n in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) < 3:
        raise MRSuperResError(f"{path} is a {len(shape)}D image {shape}: need a 3D volume")
    if len(shape) > 3:
        raise MRSuperResError(
            f"{path} is a {len(shape)}D image {shape} (a time series or vector image): "
            "need a single 3D volume; extract one first")
    if min(shape) < 1:
        raise MRSuperResError(f"{path} is empty (shape {shape})")
    return shape


def check_voxels(data: np.ndarray, name: str | os.PathLike = "volume") -> np.ndarray:
    """Refuse non-finite and constant volumes, whatever their source; returns float32 data."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 3:
        raise MRSuperResError(f"{name} is a {data.ndim}D image {data.shape}: need a 3D volume")
    if data.size == 0:
        raise MRSuperResError(f"{name} is empty (shape {data.shape})")
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise MRSuperResError(f"{name} has {bad} NaN or infinite voxels: fix or mask them first")
    lo, hi = float(data.min()), float(data.max())
    if lo == hi:
        raise MRSuperResError(f"{name} is empty: every voxel equals {lo:g}, nothing to super-resolve")
    return data


def intensity_range(data: np.ndarray) -> tuple[float, float]:
    """The (min, max) used to map a volume to [0, 1] and back (per-volume min-max)."""
    return float(data.min()), float(data.max())


# ----------------------------------------------------------------------------- writing

def check_writable(path: str | os.PathLike) -> Path:
    """Fail early, before any computation, when `path` cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise MRSuperResError(f"output path is a folder: {path}")
    file_format(path)
    if path.name.lower().endswith(".nhdr"):
        raise MRSuperResError(f"writing detached NRRD (.nhdr) is not supported: use .nrrd for {path}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise MRSuperResError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise MRSuperResError(f"output folder is not writable: {parent}")
    return path


def write_volume(volume: Volume, path: str | os.PathLike, dtype: str = "float32") -> Path:
    """Write atomically (temporary name + rename); NaN/Inf never reach a file."""
    path = check_writable(path)
    data = np.asarray(volume.data)
    if not np.isfinite(data).all():
        raise MRSuperResError("refusing to write a volume with NaN or infinite voxels")
    if dtype != "float32":
        info = np.iinfo(dtype) if np.issubdtype(np.dtype(dtype), np.integer) else None
        data = np.clip(np.rint(data), info.min, info.max) if info else data
    data = data.astype(dtype, copy=False)
    kind = file_format(path)
    suffix = ".nii.gz" if str(path).lower().endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".partial{suffix}", dir=path.parent)
    os.close(fd)
    try:
        if kind == "nifti":
            _write_nifti(data, volume, tmp)
        else:
            _write_nrrd(data, volume, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise MRSuperResError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    return path


def _write_nifti(data: np.ndarray, volume: Volume, path: str) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(data, volume.affine)
    qcode = volume.meta.get("qform_code") or 1
    scode = volume.meta.get("sform_code") or qcode
    img.set_qform(volume.affine, code=int(qcode))
    img.set_sform(volume.affine, code=int(scode))
    units = volume.meta.get("xyzt_units")
    img.header.set_xyzt_units(*(units if units and units[0] != "unknown" else ("mm", "sec")))
    nib.save(img, path)


def _write_nrrd(data: np.ndarray, volume: Volume, path: str) -> None:
    import nrrd

    lps = _LPS @ volume.affine[:3]
    header = {"space": "left-posterior-superior", "kinds": ["domain"] * 3,
              "space directions": lps[:, :3].T, "space origin": lps[:, 3], "encoding": "gzip"}
    nrrd.write(path, data, header, index_order="F")
