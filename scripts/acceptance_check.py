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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from ship_model import axial_axis  # noqa: E402

from MRSuperResLib import geometry  # noqa: E402
from MRSuperResLib.errors import MRSuperResError  # noqa: E402
from MRSuperResLib.metrics import slice_metrics  # noqa: E402
from MRSuperResLib.resample import crop_to_multiple, upsample  # noqa: E402
from MRSuperResLib.volumes import Volume, read_volume, write_volume  # noqa: E402

CLI = [sys.executable, "-m", "MRSuperResLib"]


def run(*args: str) -> None:
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        sys.exit(f"mrsuperres {args[0]} failed: {(done.stderr or done.stdout).strip()}")


def check(path: str, models: list[str], work: Path) -> None:
    volume, ax = read_volume(path), axial_axis(Path(path))
    cropped = crop_to_multiple(volume, 4, ax)
    hr = Volume(cropped.data.astype(np.float32), cropped.affine, {})
    write_volume(hr, work / "hr.nii.gz")
    run("degrade", str(work / "hr.nii.gz"), "-o", str(work / "lr.nii.gz"), "--scale", "4", "--degrade", "bilinear",
        "--axis", str(ax))
    lr = read_volume(str(work / "lr.nii.gz"))
    gt = geometry.slices_first(hr.data, ax)
    lo, hi = float(gt.min()), float(gt.max())
    keep = [i for i in range(gt.shape[0]) if gt[i].max() > lo]
    outputs = {"bicubic": upsample(geometry.slices_first(lr.data, ax).astype(np.float32), 4, "bicubic")}
    for m in models:
        run("enhance", str(work / "lr.nii.gz"), "-o", str(work / f"{m}.nii.gz"), "--model", m, "--axis", str(ax))
        sr = read_volume(str(work / f"{m}.nii.gz"))
        if not np.allclose(sr.affine, hr.affine, atol=1e-4):
            sys.exit(f"{m}'s output is not on the scan's grid")
        outputs[m] = geometry.slices_first(sr.data, ax)

    def unit(x):
        return np.clip((x - lo) / (hi - lo), 0, 1)

    scores = {name: np.mean([[slice_metrics(unit(gt[i]), unit(out[i]))[q] for q in ("ssim", "psnr", "vif")]
                             for i in keep], 0) for name, out in outputs.items()}
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
