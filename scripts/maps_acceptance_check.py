"""The maps' acceptance as a user runs it, on high-resolution scans you have:

    python scripts/maps_acceptance_check.py SCAN.nii.gz [SCAN2.nrrd ...] [--model mri-x4-fidelity]

Each scan is cropped to a multiple of 4 in-plane, degraded with `mrsuperres degrade` (bilinear
x4, axial slices) and restored with `mrsuperres enhance --maps DIR --consistency exact`. Checked
and printed: both maps are on the output's exact grid; the output averaged over each input
voxel equals the input to 1e-3 of the input's range; the consistency map's per-patch values
correlate positively with per-patch |SR - GT| (MRSuperResLib.evaluation.map_scores)."""
import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from acceptance_check import reduce_scan, run   # beside this script: the same reduction and CLI runner
from MRSuperResLib.pipeline import consistency
from MRSuperResLib.scans import geometry
from MRSuperResLib.evaluation.map_scores import Ranking
from MRSuperResLib.scans.volumes import intensity_range, normalise, read_volume


def check(path: str, model: str, work: Path) -> bool:
    hr, ax = reduce_scan(path, work)
    run("enhance", str(work / "lr.nii.gz"), "-o", str(work / "sr.nii.gz"), "--model", model, "--axis", str(ax),
        "--consistency", "exact", "--maps", str(work / "maps"))
    lr, sr = read_volume(str(work / "lr.nii.gz")), read_volume(str(work / "sr.nii.gz"))
    maps = {m: read_volume(str(work / "maps" / f"sr_{m}.nii.gz")) for m in ("consistency", "uncertainty")}
    on_grid = all(m.data.shape == sr.data.shape and np.allclose(m.affine, sr.affine, atol=1e-6)
                  for m in maps.values()) and np.allclose(sr.affine, hr.affine, atol=1e-4)
    lr_stack, sr_stack = geometry.slices_first(lr.data, ax), geometry.slices_first(sr.data, ax)
    span = float(np.ptp(lr_stack))
    box_error = float(np.abs(consistency.reacquire(sr_stack, 4) - lr_stack).max()) / span
    lo_hi = intensity_range(hr.data)
    gt01 = normalise(geometry.slices_first(hr.data, ax), lo_hi)
    sr01 = normalise(sr_stack, lo_hi)
    keep = gt01.reshape(len(gt01), -1).max(1) > 0                      # blank slices dropped
    ranking = Ranking(4)
    ranking.add(gt01[keep], sr01[keep], {m: geometry.slices_first(v.data, ax)[keep] / (lo_hi[1] - lo_hi[0])
                                         for m, v in maps.items()})
    scores = ranking.scores()
    ok = on_grid and box_error <= 1e-3 and scores["consistency"]["spearman"] > 0
    print(f"{Path(path).name} ({model}): maps on the output grid: {on_grid}; box average vs input: max "
          f"{box_error:.1e} of the range (<= 1e-3: {box_error <= 1e-3}); per-patch Spearman vs |SR - GT|: "
          + ", ".join(f"{m} {s['spearman']:+.3f} (top 5% catches {100 * s['top_caught']:.0f}% of the worst)"
                      for m, s in scores.items()) + f"; {'PASS' if ok else 'FAIL'}", flush=True)
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scans", nargs="+")
    ap.add_argument("--model", default="mri-x4-fidelity")
    args = ap.parse_args()
    results = []
    for path in args.scans:
        with tempfile.TemporaryDirectory(prefix="mrsuperres-maps-") as work:
            results.append(check(path, args.model, Path(work)))
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
