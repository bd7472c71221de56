"""DICOM out: a volume as a DICOM MR series (one file per slice) or one multi-frame file, through
SimpleITK (GDCM), so that reading it back (dicom.py) gives the same voxels and geometry. Voxels are
stored as int16, the grid in the standard position and orientation tags."""
from __future__ import annotations

import contextlib
import locale
import time
from pathlib import Path

import numpy as np


def sitk_image(volume):
    """`volume` (RAS, voxels [i, j, k]) as an int16 SimpleITK image in LPS: the inverse of dicom.volume_of."""
    import SimpleITK as sitk

    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.rint(volume.data).astype(np.int16).transpose(2, 1, 0))
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing).flatten().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    return image


@contextlib.contextmanager
def locale_kept():
    """GDCM's writer sets the C locale; give the process its own back after."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def write_dicom_series(volume, folder: Path, description: str = "T1 sample", modality: str = "MR",
                       image_type: str = "ORIGINAL\\PRIMARY\\M\\NORM") -> list[Path]:
    """`volume` (MRSuperResLib Volume, RAS) as a DICOM series in `folder`; returns the files."""
    import SimpleITK as sitk

    image = sitk_image(volume)
    spacing = image.GetSpacing()
    folder.mkdir(parents=True, exist_ok=True)
    stamp = str(int(time.time() * 1000))
    study, series = f"1.2.826.0.1.3680043.2.1125.{stamp}.1", f"1.2.826.0.1.3680043.2.1125.{stamp}.2"
    direction = image.GetDirection()
    orientation = "\\".join(f"{v:.10g}" for v in (direction[0], direction[3], direction[6],
                                                  direction[1], direction[4], direction[7]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    with locale_kept():
        _write_planes(sitk, writer, image, folder, files, spacing, study, series, orientation, description,
                      modality, image_type)
    return files


def write_multiframe(volume, path: Path) -> Path:
    """`volume` as one multi-frame DICOM MR file (GDCM's own layout of a 3D image)."""
    import SimpleITK as sitk

    image = sitk_image(volume)
    image.SetMetaData("0008|0060", "MR")
    path.parent.mkdir(parents=True, exist_ok=True)
    with locale_kept():
        sitk.WriteImage(image, str(path))
    return path


def _write_planes(sitk, writer, image, folder, files, spacing, study, series, orientation, description, modality,
                  image_type) -> None:
    for k in range(image.GetDepth()):
        plane = image[:, :, k]
        tags = {"0008|0060": modality, "0008|0008": image_type, "0008|103e": description,
                "0020|000d": study, "0020|000e": series, "0008|0018": f"{series}.{k + 1}",
                "0020|0037": orientation, "0020|0013": str(k + 1), "0018|0050": f"{spacing[2]:.10g}",
                "0020|0032": "\\".join(f"{v:.10g}" for v in image.TransformIndexToPhysicalPoint((0, 0, k)))}
        for key, value in tags.items():
            plane.SetMetaData(key, value)
        path = folder / f"slice{k + 1:04d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(plane)
        files.append(path)
