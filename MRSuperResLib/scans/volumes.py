"""3D scalar volumes with their geometry: NIfTI (nibabel) and NRRD (pynrrd), read and written.

A `Volume` holds float32 voxels indexed [i, j, k] and a 4x4 affine from voxel index to RAS
millimetres (nibabel's convention, which is also Slicer's IJKToRAS). NRRD files in LPS are
converted on the way in and written back in LPS, as Slicer writes them. Outputs are written to
a temporary name in the destination folder and renamed when complete.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MRSuperResError
from ..files import atomic_path
from . import sizes

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
_LPS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Volume:
    data: np.ndarray                     # float32, [i, j, k]
    affine: np.ndarray                   # 4x4 voxel index -> RAS mm
    meta: dict = field(default_factory=dict)
    maps: dict = field(default_factory=dict)   # name -> Volume on this grid (enhance_volume's maps)

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    def regridded(self, data: np.ndarray, axis: int, factor: float, along: tuple | None = None) -> "Volume":
        """`data` on this volume's grid resampled in-plane (or along the axes `along`) by
        `factor` (see geometry); the stored qform/sform move with it."""
        from .geometry import resample_affine

        meta = dict(self.meta)
        for key in ("qform", "sform"):
            if meta.get(key) is not None:
                meta[key] = resample_affine(meta[key], axis, factor, along)
        return Volume(data, resample_affine(self.affine, axis, factor, along), meta)

    def map_of(self, data: np.ndarray, what: str) -> "Volume":
        """A map (same shape as this volume) on its grid, its description saying what it is."""
        meta = {k: v for k, v in self.meta.items() if k not in ("description", "path", "dtype", "format")}
        return Volume(data, self.affine, {**meta, "description": f"MRSuperRes {what}"})


DICOM_HINT = ("DICOM series are read by `mrsuperres enhance SERIES_FOLDER -o OUT_FOLDER` (a batch); for this "
              "command convert the series to NIfTI first (dcm2niix -z y -o OUT_FOLDER SERIES_FOLDER)")


def looks_like_dicom(path: str | os.PathLike) -> bool:
    """A .dcm/.ima file, a file with the DICM preamble, or a folder holding such files."""
    path = Path(path)
    candidates = [path] if not path.is_dir() else sorted(p for p in path.iterdir() if p.is_file())[:5]
    for item in candidates:
        if item.suffix.lower() in (".dcm", ".ima", ".dicom"):
            return True
        try:
            with open(item, "rb") as f:
                if f.read(132)[128:] == b"DICM":
                    return True
        except OSError:
            pass
    return False


def file_format(path: str | os.PathLike, purpose: str = "read") -> str:
    """'nifti' or 'nrrd' from the name; `purpose` ('read' an input or 'write' an output) words the refusal."""
    name = str(path).lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(NRRD_SUFFIXES):
        return "nrrd"
    if purpose == "write":
        raise MRSuperResError(f"cannot write the output {path}: its name must end in .nii, .nii.gz or .nrrd")
    if looks_like_dicom(path):
        raise MRSuperResError(f"{path} is DICOM. {DICOM_HINT}")
    raise MRSuperResError(f"unsupported input file type: {path} (expected .nii, .nii.gz, .nrrd or .nhdr)")


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
    if path.is_dir():
        hint = f" ({DICOM_HINT})" if looks_like_dicom(path) else ""
        raise MRSuperResError(f"expected a volume file, got a folder: {path}{hint}")
    kind = file_format(path)
    if not path.exists():
        raise MRSuperResError(f"file not found: {path}")
    if not os.access(path, os.R_OK):
        raise MRSuperResError(f"cannot read {path}: permission denied")
    try:
        data, affine, meta = _read_nifti(path) if kind == "nifti" else _read_nrrd(path)
    except MRSuperResError:
        raise
    except MemoryError:
        raise MRSuperResError(f"not enough memory to read {path}") from None
    except Exception as exc:  # nibabel/pynrrd/gzip raise many types for damaged files
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise MRSuperResError(f"cannot read {path}: not a valid {kind.upper()} file or truncated ({detail})") from None
    check_affine(affine, path)
    meta["path"] = str(path)
    return Volume(check_voxels(data, path), affine, meta)


def check_affine(affine: np.ndarray, name) -> None:
    """Refuse geometry that cannot place voxels: non-finite or degenerate (zero spacing)."""
    m = np.asarray(affine, dtype=np.float64)
    if not np.isfinite(m).all():
        raise MRSuperResError(f"{name}: its voxel-to-world transform holds NaN or infinite values")
    if abs(np.linalg.det(m[:3, :3])) < 1e-9 or (np.linalg.norm(m[:3, :3], axis=0) < 1e-6).any():
        raise MRSuperResError(f"{name}: its voxel-to-world transform is degenerate (a spacing of 0)")


def _read_nifti(path: Path):
    """NIfTI-1/2 via nibabel; the qform and sform (and their codes) are kept for writing back."""
    import nibabel as nib

    img = nib.load(str(path))                 # the header only: the voxels are read below
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise MRSuperResError(f"{path} is not a NIfTI image")
    dtype = img.get_data_dtype()
    gz = str(path).lower().endswith(".gz")
    sizes.check_before_reading(path, img.shape, dtype.itemsize, 0 if gz else int(img.dataobj.offset),
                               "gzip" if gz else "raw")
    if dtype.names is not None or dtype.kind == "c":
        raise MRSuperResError(f"{path} is an RGB, vector or complex image ({dtype}): need a single-channel volume")
    if img.header.get_intent()[0] in ("vector", "rgb vector", "rgba vector"):
        raise MRSuperResError(f"{path} is a vector image (intent {img.header.get_intent()[0]}): need a scalar volume")
    shape = _scalar_shape(img.shape, path)
    data = img.get_fdata(dtype=np.float32, caching="unchanged")  # applies scl_slope/inter
    header = img.header
    slope, inter = getattr(img.dataobj, "slope", 1.0), getattr(img.dataobj, "inter", 0.0)
    scaled = not (np.isclose(slope, 1.0) and np.isclose(inter, 0.0))
    qcode, scode = int(header["qform_code"]), int(header["sform_code"])
    if qcode == 0 and scode == 0:
        # no orientation stored: nifti1_io's method 1, RAS = pixdim * index (not nibabel's flipped guess)
        affine = np.diag(list(np.asarray(header.get_zooms()[:3], dtype=np.float64)) + [1.0])
    else:
        affine = np.asarray(img.affine, dtype=np.float64)
    meta = dict(format="nifti", dtype="float32" if scaled else str(dtype), qform_code=qcode, sform_code=scode,
                qform=np.asarray(header.get_qform(), dtype=np.float64) if qcode else None,
                sform=np.asarray(header.get_sform(), dtype=np.float64) if scode else None,
                xyzt_units=header.get_xyzt_units())
    return data.reshape(shape), affine, meta


def _read_nrrd(path: Path):
    """NRRD via pynrrd; no `space` field means ITK's (and Slicer's) convention, LPS."""
    import nrrd

    check_nrrd_header(path, nrrd.read_header(str(path)))
    raw, header = nrrd.read(str(path), index_order="F")
    kinds = [str(k).lower() for k in header.get("kinds", [])]
    if kinds and len(kinds) == raw.ndim:      # drop size-1 non-spatial axes (e.g. a 1-element list axis)
        keep = [i for i, (k, n) in enumerate(zip(kinds, raw.shape)) if not (n == 1 and k not in ("domain", "space"))]
        if len(keep) < raw.ndim:
            raw = raw.reshape([raw.shape[i] for i in keep], order="F")
            kinds = [kinds[i] for i in keep]
    non_spatial = [k for k in kinds if k not in ("domain", "space", "time", "???", "none")]
    if non_spatial or raw.dtype.kind == "c":
        raise MRSuperResError(
            f"{path} is an RGB or vector image (kinds {header.get('kinds')}): need a single-channel volume")
    shape = _scalar_shape(raw.shape, path)
    data = np.asarray(raw, dtype=np.float32).reshape(shape, order="F")
    affine = np.eye(4)
    directions = header.get("space directions")
    space = str(header.get("space", "left-posterior-superior")).lower()
    if directions is not None:
        dirs = np.asarray([d for d in directions if d is not None and not np.isnan(np.asarray(d, float)).all()],
                          dtype=np.float64)
        if dirs.shape != (3, 3):
            raise MRSuperResError(f"{path}: space directions {directions} do not describe a 3D grid")
        affine[:3, :3] = dirs.T
        affine[:3, 3] = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    elif "spacings" in header:
        affine[:3, :3] = np.diag(np.asarray(header["spacings"], dtype=np.float64)[:3])
    if space in ("left-posterior-superior", "lps"):
        affine[:3] = _LPS @ affine[:3]
    elif space not in ("right-anterior-superior", "ras"):
        raise MRSuperResError(f"{path}: NRRD space '{space}' is not supported (use RAS or LPS)")
    meta = dict(format="nrrd", dtype=str(raw.dtype))
    thick = header.get("thicknesses")                  # per axis, NaN where not given (slice thickness)
    if thick is not None and len(thick) == 3:
        meta["thicknesses"] = [float(t) if t is not None else float("nan") for t in thick]
    return data, affine, meta


def check_nrrd_header(path: Path, header: dict) -> None:
    """Before pynrrd reads the voxels: a detached data file must lie in the header's folder (a
    .nhdr cannot make MRSuperRes read /etc/passwd as an image), and the file must be able to hold
    what the header declares."""
    import nrrd.reader

    data_file = header.get("data file") or header.get("datafile")
    target = None
    if data_file:
        if str(data_file).startswith("LIST") or "%" in str(data_file):
            raise MRSuperResError(f"{path}: NRRD data split over several files is not supported")
        folder = path.resolve().parent
        target = (folder / str(data_file)).resolve()
        if folder not in target.parents:
            raise MRSuperResError(f"{path}: its data file {data_file} lies outside the header's folder; "
                                  "keep the .nhdr beside its data")
        if not target.is_file():
            raise MRSuperResError(f"{path}: its data file {target} does not exist")
    try:
        itemsize = nrrd.reader._determine_datatype(header).itemsize
        shape = [int(n) for n in header["sizes"]]
    except Exception:                         # noqa: BLE001 (pynrrd then refuses it in its own words)
        return
    encoding = str(header.get("encoding", "raw")).lower()
    sizes.check_before_reading(path, shape, itemsize, int(header.get("byte skip", 0) or 0) if target else 0,
                               {"gz": "gzip"}.get(encoding, encoding), target)


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
        raise MRSuperResError(f"{name} has {bad} NaN or infinite voxels (or values beyond float32): "
                              "fix or mask them first")
    lo, hi = float(data.min()), float(data.max())
    if lo == hi:
        raise MRSuperResError(f"{name} is empty: every voxel equals {lo:g}, nothing to super-resolve")
    if not np.isfinite(np.float32(hi) - np.float32(lo)):
        raise MRSuperResError(f"{name}: intensities span {lo:g} to {hi:g}, beyond what float32 arithmetic can hold")
    return data


def intensity_range(data: np.ndarray) -> tuple[float, float]:
    """The (min, max) used to map a volume to [0, 1] and back (per-volume min-max)."""
    return float(data.min()), float(data.max())


def normalise(data: np.ndarray, lo_hi: tuple[float, float] | None = None, *, clip: bool = False) -> np.ndarray:
    """A new float32 array (x - lo) * (1 / (hi - lo)): the one min-max formula, in float32, so
    that enhance, evaluate, training and the Slicer comparison agree to the bit. `lo_hi`
    defaults to the data's own `intensity_range` (pass a reference volume's to share its
    scale); `clip` clamps to [0, 1]. Memory: one float32 array the size of `data`."""
    lo, hi = intensity_range(data) if lo_hi is None else lo_hi
    out = np.asarray(data, dtype=np.float32) - np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    if clip:
        np.clip(out, 0, 1, out=out)
    return out


def denormalise(x01: np.ndarray, lo: float, hi: float, *, in_place: bool = False) -> np.ndarray:
    """`normalise`'s inverse, x * (hi - lo) + lo in float32; `in_place` overwrites the float32
    `x01` instead of allocating (enhance's volume-sized outputs)."""
    out = x01 if in_place else np.array(x01, dtype=np.float32)
    out *= np.float32(hi - lo)
    out += np.float32(lo)
    return out


# ----------------------------------------------------------------------------- writing

def refuse_overwriting_input(source: str | os.PathLike, output: str | os.PathLike) -> None:
    """An output that is its own input would destroy what it is made from: refused before any work."""
    if Path(source).exists() and Path(source).resolve() == Path(output).resolve():
        raise MRSuperResError(f"the output {output} is the input file: choose another name")


def check_writable(path: str | os.PathLike, create_folder: bool = False) -> Path:
    """Fail early, before any computation, when `path` cannot be written; `create_folder`: a
    missing folder will be made (when the output is written), so its nearest existing one must be
    writable."""
    path = Path(path)
    if path.is_dir():
        raise MRSuperResError(f"output path is a folder: {path}")
    file_format(path, "write")
    if path.name.lower().endswith(".nhdr"):
        raise MRSuperResError(f"writing detached NRRD (.nhdr) is not supported: use .nrrd for {path}")
    parent = path.parent if str(path.parent) else Path(".")
    if create_folder and not parent.exists():
        check_out_dir(parent, "-o")
        return path
    if not parent.is_dir():
        raise MRSuperResError(f"{parent} is a file, not a folder: it cannot hold {path.name}" if parent.exists()
                              else f"output folder does not exist: {parent}")
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
    kind = file_format(path, "write")
    suffix = ".nii.gz" if str(path).lower().endswith(".nii.gz") else path.suffix
    try:
        with atomic_path(path, suffix) as tmp:          # the writers pick the format by suffix
            (_write_nifti if kind == "nifti" else _write_nrrd)(data, volume, str(tmp))
    except OSError as exc:
        raise MRSuperResError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def _write_nifti(data: np.ndarray, volume: Volume, path: str) -> None:
    """qform and sform as the input had them (each moved onto the new grid, codes kept), when
    the metadata still describes this grid; otherwise the volume's affine with code 1 (scanner)."""
    import nibabel as nib

    img = nib.Nifti1Image(data, volume.affine)
    meta = volume.meta
    qform, sform = meta.get("qform"), meta.get("sform")
    preferred = sform if sform is not None else qform
    if preferred is not None and np.allclose(preferred, volume.affine, atol=1e-6):
        img.set_sform(sform if sform is not None else volume.affine, code=int(meta.get("sform_code") or 0))
        img.set_qform(qform if qform is not None else volume.affine, code=int(meta.get("qform_code") or 0))
    else:
        img.set_qform(volume.affine, code=1)
        img.set_sform(volume.affine, code=1)
    units = meta.get("xyzt_units")
    img.header.set_xyzt_units(*(units if units and units[0] != "unknown" else ("mm", "sec")))
    if meta.get("description"):
        img.header["descrip"] = meta["description"].encode("ascii", "replace")[:79]
    nib.save(img, path)


def _write_nrrd(data: np.ndarray, volume: Volume, path: str) -> None:
    import nrrd

    lps = _LPS @ volume.affine[:3]
    header = {"space": "left-posterior-superior", "kinds": ["domain"] * 3,
              "space directions": lps[:, :3].T, "space origin": lps[:, 3], "encoding": "gzip"}
    if volume.meta.get("description"):
        header["content"] = volume.meta["description"].replace("\n", " ")
    nrrd.write(path, data, header, index_order="F")


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
