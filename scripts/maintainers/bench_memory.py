"""Peak memory of `mrsuperres enhance` on a 256^3 volume at x4 (issue 4: stay within 4 GB on CPU).

    python scripts/maintainers/bench_memory.py [--size 256] [--blocks 1]

Builds a 256^3 uint8 volume from the bundled sample (tiled), and a random x4 RRDBNet with the
real model's width (64 features; activation memory depends on width and slice size, not on
the number of blocks, so 1 block keeps the run short), then runs the real command line in a
child process and prints its peak RSS, the output size and the time.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    from MRSuperResLib.models.rrdbnet import RRDBNet
    from MRSuperResLib.models.weights import save_model

    n = args.size
    sample = nib.load(str(ROOT / "Resources" / "SampleData" / "colin27_t1_brain_slab.nii.gz"))
    data = np.asarray(sample.dataobj)
    reps = [-(-n // s) for s in data.shape]
    volume = np.tile(data, reps)[:n, :n, :n].astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        nib.save(nib.Nifti1Image(volume, np.diag([4.0, 4.0, 1.0, 1.0])), str(tmp / "in.nii.gz"))
        model = RRDBNet(1, 1, scale=4, num_feat=64, num_block=args.blocks, num_grow_ch=32)
        save_model(model, tmp / "m.safetensors", {"training_data": "random (memory benchmark)", "iterations": 0})
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "MRSuperResLib", "enhance", str(tmp / "in.nii.gz"), "-o",
                        str(tmp / "out.nii.gz"), "--model", str(tmp / "m.safetensors"), "--axis", "2",
                        "--precision", args.precision], check=True, cwd=ROOT)
        seconds = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        out = nib.load(str(tmp / "out.nii.gz"))
        print(f"{n}^3 uint8 -> {out.shape} float32 ({np.prod(out.shape) * 4 / 2**30:.2f} GiB of output), "
              f"peak RSS of enhance {peak_mb / 1024:.2f} GiB, {seconds:.0f} s (x4, {args.blocks}-block 64-feature "
              f"RRDBNet, precision {args.precision})")


if __name__ == "__main__":
    main()
