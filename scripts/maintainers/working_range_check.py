"""The network's working range (engine/working_range) on the known volumes, as the evaluate protocol
reduces them: the ceiling for each volume, scale (2, 4, 8) and degradation (bilinear, bicubic,
k-space). Every validation and independent volume must stay at 1, so that the shipped figures
hold; run it after changing TISSUE_LEVEL or PERCENTILE.

    python scripts/maintainers/working_range_check.py [--data DIR]   # DIR as fetch_training_data.py --dest

Prints one line per volume; exits with 1 if a validation or independent volume gets a ceiling below 1.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from MRSuperResLib.engine.limits import MIN_SLICE
from MRSuperResLib.engine.working_range import ceiling
from MRSuperResLib.evaluation.comparison import crop_to_multiple
from MRSuperResLib.models.datasets import EVALUATION, TRAINING, VALIDATION
from MRSuperResLib.options import DEGRADATIONS, home_dir
from MRSuperResLib.scans import geometry
from MRSuperResLib.scans.degrade import degrade_volume
from MRSuperResLib.scans.volumes import Volume, intensity_range, normalise, read_volume

SCALES = (2, 4, 8)                     # the shipped in-plane models' scales


def ceilings(path: Path) -> list[float | None]:
    """The ceiling per (scale, degradation); None where the slices are too small for the scale."""
    volume = read_volume(path)
    ax = geometry.choose_axis("auto", volume.affine, volume.data.shape)
    found = []
    for scale in SCALES:
        if min(volume.data.shape[a] for a in geometry.in_plane_axes(ax)) < scale * MIN_SLICE:   # evaluate's bound
            found += [None] * len(DEGRADATIONS)
            continue
        gt = crop_to_multiple(Volume(volume.data.astype(np.float32), volume.affine, volume.meta), scale, ax)
        lo, hi = intensity_range(gt.data)
        for degradation in DEGRADATIONS:
            lr = degrade_volume(gt, scale, degradation, ax)
            found.append(ceiling(normalise(geometry.slices_first(lr.data, ax), (lo, hi), clip=True)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=home_dir() / "data")
    args = parser.parse_args()
    print("volume                      role         " + " ".join(f"x{s}-{d[:4]:4s}" for s in SCALES for d in DEGRADATIONS))
    failed = False
    for names, role, folder in ((TRAINING, "training", args.data), (VALIDATION, "validation", args.data),
                                (EVALUATION, "independent", args.data / "evaluation")):
        for name in names:
            path = folder / name
            if not path.exists():
                print(f"{name:28s}{role:13s}not fetched ({path})")
                continue
            found = ceilings(path)
            failed |= role != "training" and any(c is not None and c < 1 for c in found)
            print(f"{name:28s}{role:13s}" + " ".join("   -   " if c is None else f"{c:7.3f}" for c in found))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
