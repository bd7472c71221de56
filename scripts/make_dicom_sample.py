#!/usr/bin/env python
"""Write a volume as a DICOM MR series (one file per slice, SimpleITK), to try DICOM input on:

    python scripts/make_dicom_sample.py [VOLUME] [-o FOLDER]

By default the bundled Colin27 slab goes to dicom_sample/. The voxels are stored as int16 (the
sample's values are integers), the grid in the standard position and orientation tags, so that
reading the series back gives the same voxels and geometry as the NIfTI."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from MRSuperResLib.options import SAMPLE_VOLUME as SAMPLE  # noqa: E402
from MRSuperResLib.scans.dicom_write import write_dicom_series, write_multiframe  # noqa: E402


def main() -> None:
    from MRSuperResLib.scans.volumes import read_volume

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("volume", nargs="?", default=str(SAMPLE))
    ap.add_argument("-o", "--output", default="dicom_sample")
    ap.add_argument("--multiframe", action="store_true", help="one multi-frame file OUTPUT/volume.dcm instead")
    args = ap.parse_args()
    if args.multiframe:
        print(write_multiframe(read_volume(args.volume), Path(args.output) / "volume.dcm"))
        return
    files = write_dicom_series(read_volume(args.volume), Path(args.output))
    print(f"{args.output}: {len(files)} DICOM files")


if __name__ == "__main__":
    main()
