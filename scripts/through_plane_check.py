"""Through-plane super-resolution against ground truth, as a user would check it, with CPU times.

    python scripts/through_plane_check.py GT.nii.gz [GT2 ...] --thickness 4 5 6 [--model mri-thick-x1]
                                          [--self-iters N] [--eclare /path/to/run-eclare] [--json out.json]

For each isotropic ground truth and slice thickness: `mrsuperres degrade --degrade thick` makes
the thick-slice scan (contiguous slices, `--profile` Gaussian or rectangular); cubic interpolation across the slices,
the pretrained through-plane model (`mrsuperres enhance`), the model after `mrsuperres train --self`
on that scan, and optionally ECLARE (its `run-eclare` on the CPU, given the same slice thickness)
bring it back to the original grid. Every output is scored against the ground truth with the
evaluate protocol (min-max of the ground truth, blank slices dropped; `evaluate_thick`): the
slices perpendicular to the slice axis and the two orientations that contain it. The time of
each method is the wall time of its commands, start-up included.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from MRSuperResLib.options import SLICE_PROFILE_DEFAULT, SLICE_PROFILES
from MRSuperResLib.scans import geometry
from MRSuperResLib.evaluation.metrics import score_slices, summarise_by_method
from MRSuperResLib.scans.degrade import thick_factor, whole_slices
from MRSuperResLib.scans.slice_profile import interpolate
from MRSuperResLib.scans.volumes import Volume, intensity_range, normalise, read_volume, write_volume

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "MRSuperResLib"]


def run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def scores(gt01: np.ndarray, outputs: dict, axis: int) -> dict:
    """{orientation: {method: {metric: {mean, std, n}}}} on [0, 1] arrays of the same grid."""
    result = {}
    for orient in range(3):
        stack = geometry.slices_first(gt01, orient)
        keep = np.flatnonzero(stack.reshape(stack.shape[0], -1).max(1) > 0)
        rows, _ = score_slices(stack[keep], {m: geometry.slices_first(o, orient)[keep] for m, o in outputs.items()},
                               keep)
        name = "perpendicular" if orient == axis else geometry.AXIS_NAMES[orient].split()[0]
        result[name] = summarise_by_method(rows, list(outputs))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gt", nargs="+", type=Path)
    parser.add_argument("--thickness", type=float, nargs="+", default=[5.0])
    parser.add_argument("--model", default="mri-thick-x1")
    parser.add_argument("--profile", nargs="+", default=[SLICE_PROFILE_DEFAULT], choices=SLICE_PROFILES,
                        help="slice profiles to simulate (each with every thickness)")
    parser.add_argument("--self-iters", type=int, default=None, help="train --self iterations (default: its own)")
    parser.add_argument("--eclare", default=None, help="run-eclare executable (another venv: it pins scipy 1.11)")
    parser.add_argument("--eclare-patches", type=int, default=None, help="ECLARE --n-patches (default: its own)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for gt_path in args.gt:
            gt = read_volume(gt_path)
            axis = geometry.choose_axis("auto", gt.affine, gt.data.shape)
            for thickness, profile in [(t, p) for p in args.profile for t in args.thickness]:
                factor = thick_factor(gt, axis, thickness, str(gt_path))
                cropped = whole_slices(Volume(gt.data, gt.affine), axis, factor)
                n = cropped.data.shape[axis]
                name = f"{gt_path.name.split('.')[0]}-{thickness:g}mm-{profile}"
                fine = tmp / f"{name}-gt.nii.gz"
                write_volume(cropped, fine)
                thick = tmp / f"{name}.nii.gz"
                run([*CLI, "degrade", str(fine), "-o", str(thick), "--degrade", "thick", "--thickness",
                     str(thickness), "--axis", str(axis), "--profile", profile])
                lo, hi = intensity_range(cropped.data)
                gt01 = normalise(cropped.data, (lo, hi), clip=True)
                thick_vol = read_volume(thick)
                t0 = time.perf_counter()
                outputs = {"cubic": np.clip(normalise(interpolate(thick_vol.data, axis, factor, n), (lo, hi)), 0, 1)}
                seconds = {"cubic": time.perf_counter() - t0}
                sr = tmp / f"{name}-sr.nii.gz"
                seconds["pretrained"] = run([*CLI, "enhance", str(thick), "-o", str(sr), "--model", args.model,
                                             "--direction", "through-plane"])
                outputs["pretrained"] = np.clip(normalise(read_volume(sr).data, (lo, hi)), 0, 1)
                run_dir = tmp / f"{name}-self"
                extra = ["--iters", str(args.self_iters)] if args.self_iters else []
                seconds["self-supervised"] = run([*CLI, "train", "--self", str(thick), "--out", str(run_dir),
                                                  "--init", args.model, *extra])
                sr_self = tmp / f"{name}-self.nii.gz"
                seconds["self-supervised"] += run([*CLI, "enhance", str(thick), "-o", str(sr_self), "--model",
                                                   str(run_dir / "model.safetensors"), "--direction", "through-plane"])
                outputs["self-supervised"] = np.clip(normalise(read_volume(sr_self).data, (lo, hi)), 0, 1)
                if args.eclare:
                    out_dir = tmp / f"{name}-eclare"
                    extra = ["--n-patches", str(args.eclare_patches)] if args.eclare_patches else []
                    seconds["eclare"] = run([args.eclare, "--in-fpath", str(thick), "--out-dir", str(out_dir),
                                             "--relative-slice-thickness", f"{factor:g}", "--gpu-id", "-1", *extra])
                    ecl = read_volume(next(out_dir.glob("*_eclare.nii*")))
                    data = np.take(ecl.data, np.arange(min(n, ecl.data.shape[axis])), axis=axis)
                    if data.shape != cropped.data.shape:
                        print(f"ECLARE's grid {ecl.data.shape} differs from the ground truth's {cropped.data.shape}")
                    else:
                        offset = np.abs(ecl.affine - cropped.affine).max()
                        print(f"ECLARE's affine differs from the ground truth's by {offset:.3g} at most")
                        outputs["eclare"] = np.clip(normalise(data, (lo, hi)), 0, 1)
                result = dict(volume=str(gt_path), thickness_mm=thickness, profile=profile, axis=axis, factor=factor,
                              scores=scores(gt01, outputs, axis), seconds=seconds)
                report.append(result)
                perp = result["scores"]["perpendicular"]
                print(f"{name}: " + "; ".join(
                    f"{m} PSNR {perp[m]['psnr']['mean']:.2f} SSIM {perp[m]['ssim']['mean']:.4f} "
                    f"VIF {perp[m]['vif']['mean']:.3f} ({seconds[m]:.0f} s)" for m in outputs), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
