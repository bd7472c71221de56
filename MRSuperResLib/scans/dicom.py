"""DICOM in: the series in a folder (or one multi-frame file), each read as a volume with its geometry.

Reader: SimpleITK's GDCM series reader. Why: GDCM groups a folder's files by series, sorts the
slices by their position along the slice normal and builds the grid from the DICOM orientation and
position tags (rescale slope and intercept applied); it is the reader 3D Slicer itself ships, so
the extension adds nothing there, and it needs no converter run as a separate program.

Only scalar MR series are read. Other modalities, localizers (scouts) and series of fewer than
MIN_SLICES slices are skipped with a reason (`Series.skip`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MRSuperResError
from .volumes import Volume, check_voxels

MIN_SLICES = 3                       # a localizer or a single image is not a volume
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Series:
    folder: Path
    uid: str
    files: list[str]
    description: str
    modality: str
    skip: str | None = None           # why it is not enhanced, or None

    @property
    def name(self) -> str:
        """A file-name stem: the folder and the series description (or the end of its UID)."""
        label = "".join(c if c.isalnum() or c in "-_" else "_" for c in (self.description or self.uid[-8:]))
        return f"{self.folder.name}_{label}".strip("_")


def _sitk():
    try:
        import SimpleITK
    except ImportError:                               # pragma: no cover - a dependency of the package
        raise MRSuperResError("reading DICOM needs SimpleITK: pip install 'SimpleITK>=2.2'") from None
    SimpleITK.ProcessObject.SetGlobalWarningDisplay(False)     # its warnings are ours to word, in one line
    return SimpleITK


def _tag(reader, key: str) -> str:
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def find_series(folder: str | os.PathLike) -> list[Series]:
    """Every DICOM series directly in `folder`, with the reason to skip it where there is one."""
    sitk = _sitk()
    folder = Path(folder)
    found = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ():
        files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        head = sitk.ImageFileReader()
        head.SetFileName(files[0])
        head.ReadImageInformation()
        modality = _tag(head, "0008|0060")
        series = Series(folder, uid, files, _tag(head, "0008|103e"), modality)
        image_type = _tag(head, "0008|0008").upper()
        frames = int(_tag(head, "0028|0008") or 1)
        if modality and modality != "MR":
            series.skip = f"modality {modality}, not MR"
        elif "LOCALIZER" in image_type or "SCOUT" in image_type:
            series.skip = "a localizer (scout) series"
        elif max(len(files), frames) < MIN_SLICES:
            series.skip = f"{max(len(files), frames)} slice(s): not a volume"
        elif head.GetNumberOfComponents() != 1:
            series.skip = "not a scalar image (colour or vector)"
        found.append(series)
    return found


def read_series(series: Series) -> Volume:
    """The series as a volume: voxels [i, j, k] as float32 and the IJK -> RAS matrix of its grid."""
    sitk = _sitk()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(series.files)
    try:                                  # one multi-frame file is a volume by itself
        image = sitk.ReadImage(series.files[0]) if len(series.files) == 1 else reader.Execute()
    except RuntimeError as exc:
        raise MRSuperResError(f"{series.folder}: cannot read the DICOM series "
                              f"'{series.description or series.uid}': {str(exc).strip().splitlines()[-1]}") from None
    return volume_of(image, str(series.folder / series.name))


def volume_of(image, path: str) -> Volume:
    """A SimpleITK image (LPS physical space) as a Volume (RAS affine, voxels [i, j, k])."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise MRSuperResError(f"{path}: not a single 3D scalar volume")
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    data = np.ascontiguousarray(_sitk().GetArrayFromImage(image).transpose(2, 1, 0), dtype=np.float32)
    return Volume(check_voxels(data, path), _LPS_TO_RAS @ lps,
                  {"path": path, "format": "dicom", "dtype": "float32"})
