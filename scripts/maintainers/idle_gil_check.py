"""How long a non-blocking enhance takes while Slicer's idle main thread holds the GIL.

    python scripts/maintainers/idle_gil_check.py [--volume Testing/Data/aniso_vox.nii.gz] [--blocks 2 --features 32]

Runs the same enhance three ways in one process with slicer-core: blocking, as a child job
polled by an emulated idle main thread (it holds the GIL in C for 250 ms between polls, as
PythonQt does), and on a thread of this process polled the same way (the design the panel
used before child jobs). Prints the seconds of each and their ratios.
"""
from __future__ import annotations

import argparse
import ctypes
import tempfile
import time
from pathlib import Path

import torch

LIBC = ctypes.PyDLL(None)


def idle_poll(job, limit: float) -> float:
    t0 = time.monotonic()
    while job.poll() == "running":
        LIBC.usleep(250000)
        if time.monotonic() - t0 > limit:
            job.cancel()
            return float("inf")
    return time.monotonic() - t0


def main() -> None:
    from MRSuperResLib.models.rrdbnet import RRDBNet
    from MRSuperResLib.in_slicer.logic import MRSuperResLogic
    from MRSuperResLib.in_slicer.scene import headless_scene, load_volume
    from MRSuperResLib.models.weights import save_model

    root = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volume", default=str(root / "Testing" / "Data" / "aniso_vox.nii.gz"))
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--limit", type=float, default=600, help="give up on a run after this many seconds")
    args = parser.parse_args()
    headless_scene()
    node = load_volume(args.volume)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = str(Path(tmp) / "net.safetensors")
        save_model(RRDBNet(1, 1, scale=4, num_feat=args.features, num_block=args.blocks, num_grow_ch=args.features // 2),
                   model, {"training_data": "random (timing)", "iterations": 0})
        logic = MRSuperResLogic()
        options = dict(model=model, axis=2, precision="fp32")
        t0 = time.monotonic()
        logic.enhance(node, **options)
        blocking = time.monotonic() - t0
        child = idle_poll(logic.enhance(node, waitForCompletion=False, **options), args.limit)
        thread = idle_poll(logic.enhance(node, waitForCompletion=False, inProcess=True, **options), args.limit)
    print(f"torch threads {torch.get_num_threads()}; blocking (child process, waited on) {blocking:.1f} s")
    print(f"non-blocking child job, idle main thread holding the GIL: {child:.1f} s "
          f"({child / blocking:.2f}x blocking; the bar is 1.5x + 10 s = {1.5 * blocking + 10:.1f} s)")
    print(f"non-blocking thread in this process, same idle main thread: {thread:.1f} s ({thread / blocking:.2f}x)")


if __name__ == "__main__":
    main()
