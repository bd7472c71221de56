"""Through-plane models on held-out isotropic volumes, as users see them: per volume, slice profile,
thickness and slice axis, the gain over cubic interpolation across the slices (perpendicular
slices, the evaluate --degrade thick protocol), for each model given; one JSON line per case.

    python scripts/maintainers/thick_validation.py --models mri-thick-x1 runs/thick-v2 --volumes A.nii.gz B.nii.gz \
        [--cases rect:3 rect:5 gaussian:4 gaussian:6] [--axes 2 0] --out figures.jsonl

A model ships when its mean gain over the volumes beats the shipped model's and no volume is worse.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from MRSuperResLib.evaluation.thick import evaluate_thick
from MRSuperResLib.files import sha256_of
from MRSuperResLib.models.catalog import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--volumes", nargs="+", required=True, type=Path)
    parser.add_argument("--cases", nargs="+", default=["rect:3", "rect:5", "gaussian:4", "gaussian:6"])
    parser.add_argument("--axes", nargs="+", default=["2", "0"], help="voxel axes to make thick (2: axial here)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    models = {name: load_model(name if not Path(name).is_dir() else str(Path(name) / "model.safetensors"))[0]
              for name in args.models}
    with open(args.out, "a") as out:
        for path in args.volumes:
            sha = sha256_of(path)
            for axis in args.axes:
                for case in args.cases:
                    profile, mm = case.split(":")
                    for name, model in models.items():
                        t0 = time.perf_counter()
                        r = evaluate_thick([str(path)], model, thickness=float(mm), profile=profile, axis=int(axis))
                        perp = r["orientations"]["perpendicular"]
                        row = dict(model=name, volume=path.name, sha256=sha, axis=int(axis), profile=profile,
                                   thickness_mm=float(mm), psnr=perp["model"]["psnr"]["mean"],
                                   cubic=perp["cubic"]["psnr"]["mean"], ssim=perp["model"]["ssim"]["mean"],
                                   cubic_ssim=perp["cubic"]["ssim"]["mean"],
                                   gain=perp["model"]["psnr"]["mean"] - perp["cubic"]["psnr"]["mean"],
                                   seconds=round(time.perf_counter() - t0, 1))
                        out.write(json.dumps(row) + "\n")
                        out.flush()
                        print(f"{name:>14s} {path.name:28s} axis {axis} {profile:8s} {mm:>3s} mm: "
                              f"{row['psnr']:.2f} vs cubic {row['cubic']:.2f} ({row['gain']:+.2f} dB)", flush=True)


if __name__ == "__main__":
    main()
