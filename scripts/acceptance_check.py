"""Issue 6's acceptance as a user runs it, on high-resolution scans you have:

    python scripts/acceptance_check.py mri-x4-fidelity,mri-x4-gan SCAN.nii.gz [SCAN2.nrrd ...]

Each scan is cropped to a multiple of 4 in-plane, degraded with `mrsuperres degrade` (bilinear
x4, axial slices) and restored with `mrsuperres enhance --model M` (default inference). SR and
bicubic upsampling of the same LR file are scored against the scan per axial slice (min-max of
the scan, blank slices dropped): SSIM / PSNR / VIF, and each model's gain over bicubic."""
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from MRSuperResLib.scans import geometry
from MRSuperResLib.errors import MRSuperResError
from MRSuperResLib.evaluation.slices import prepare_slices
from MRSuperResLib.evaluation.metrics import score_slices
from MRSuperResLib.scans.degrade import crop_to_multiple
from MRSuperResLib.scans.resample import upsample
from MRSuperResLib.scans.volumes import Volume, intensity_range, normalise, read_volume, write_volume

ROOT = Path(__file__).resolve().parent.parent

CLI = [sys.executable, "-m", "MRSuperResLib"]


def run(*args: str) -> None:
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        sys.exit(f"mrsuperres {args[0]} failed: {(done.stderr or done.stdout).strip()}")


def reduce_scan(path: str, work: Path) -> tuple[Volume, int]:
    """The scan cropped to a multiple of 4 in-plane (work/hr.nii.gz) and reduced by `mrsuperres
    degrade`, bilinear x4 along its axial slices (work/lr.nii.gz); returns (the cropped scan, axis)."""
    volume = read_volume(path)
    ax = geometry.axial_axis(volume.affine)
    cropped = crop_to_multiple(volume, 4, ax)
    hr = Volume(cropped.data.astype(np.float32), cropped.affine, {})
    write_volume(hr, work / "hr.nii.gz")
    run("degrade", str(work / "hr.nii.gz"), "-o", str(work / "lr.nii.gz"), "--scale", "4", "--degrade", "bilinear",
        "--axis", str(ax))
    return hr, ax


def check(path: str, models: list[str], work: Path) -> None:
    hr, ax = reduce_scan(path, work)
    lr = read_volume(str(work / "lr.nii.gz"))
    gt01, keep = prepare_slices(hr.data, ax)          # min-max of the scan, blank slices dropped
    lo_hi = intensity_range(hr.data)
    outputs = {"bicubic": upsample(geometry.slices_first(lr.data, ax).astype(np.float32), 4, "bicubic")}
    for m in models:
        run("enhance", str(work / "lr.nii.gz"), "-o", str(work / f"{m}.nii.gz"), "--model", m, "--axis", str(ax))
        sr = read_volume(str(work / f"{m}.nii.gz"))
        if not np.allclose(sr.affine, hr.affine, atol=1e-4):
            sys.exit(f"{m}'s output is not on the scan's grid")
        outputs[m] = geometry.slices_first(sr.data, ax)
    _, summary = score_slices(gt01, {name: normalise(out[keep], lo_hi, clip=True) for name, out in outputs.items()},
                              keep)
    scores = {name: np.array([s[q]["mean"] for q in ("ssim", "psnr", "vif")]) for name, s in summary.items()}
    print(f"{Path(path).name}: {len(keep)} axial slices; bicubic SSIM / PSNR / VIF "
          "%.4f / %.2f / %.4f" % tuple(scores["bicubic"]), flush=True)
    for m in models:
        print(f"  {m}: gain %+.4f / %+.2f dB / %+.4f" % tuple(scores[m] - scores["bicubic"]), flush=True)


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    for path in sys.argv[2:]:
        with tempfile.TemporaryDirectory(prefix="mrsuperres-acceptance-") as work:
            try:
                check(path, sys.argv[1].split(","), Path(work))
            except MRSuperResError as exc:
                sys.exit(f"{path}: {exc}")


if __name__ == "__main__":
    main()
