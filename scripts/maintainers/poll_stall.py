"""How long Slicer's main thread stalls while an enhance with maps lands: the longest single
poll of the job, and where that time goes.

    python scripts/maintainers/poll_stall.py [--size 256] [--slices 48] [--no-maps]

A plain Python process with slicer-core stands in for Slicer: a SIZE x SIZE x SLICES volume is
enhanced x4 by a small network in a child job (the panel's path, waitForCompletion=False) and
polled every 0.25 s as the panel's timer does. Each poll is timed; the landing (the poll that
makes the nodes) is split into reading the outputs, filling the nodes and the maps' display
ranges. The network is small on purpose: what is measured is the parent, not the child.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "MRSuperRes"))


def timed(module, name: str, totals: dict, label: str) -> None:
    """Wrap module.name so that its time adds to totals[label]."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[label] = totals.get(label, 0.0) + time.perf_counter() - t0

    setattr(module, name, wrapper)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--slices", type=int, default=48)
    ap.add_argument("--no-maps", action="store_true")
    args = ap.parse_args()

    import importlib

    import MRSuperRes
    import torch

    new = (ROOT / "MRSuperResLib" / "in_slicer").is_dir()
    worker = importlib.import_module("MRSuperResLib." + ("in_slicer.job_worker" if new else "job_worker"))
    nodes = importlib.import_module("MRSuperResLib." + ("in_slicer.nodes" if new else "slicer_nodes"))
    rrdbnet = importlib.import_module("MRSuperResLib." + ("models.rrdbnet" if new else "rrdbnet"))
    weights = importlib.import_module("MRSuperResLib." + ("models.weights" if new else "weights"))
    totals: dict = {}
    timed(worker, "load_volume", totals, "read outputs")
    timed(nodes, "add_volume_node", totals, "fill nodes")
    timed(np, "percentile", totals, "map display ranges")

    MRSuperRes.headless_scene()
    tmp = Path(tempfile.mkdtemp(prefix="poll-stall-"))
    torch.manual_seed(0)
    model = tmp / "small.safetensors"
    weights.save_model(rrdbnet.RRDBNet(1, 1, scale=4, num_feat=8, num_block=1, num_grow_ch=4).eval(), model,
                       {"training_data": "random init (benchmark)", "iterations": 0})
    rng = np.random.default_rng(0)
    data = (rng.random((args.size, args.size, args.slices)) * 1000).astype(np.float32)
    import nibabel as nib
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 4.0, 1.0])), str(tmp / "in.nii.gz"))
    node = MRSuperRes.load_volume(str(tmp / "in.nii.gz"), "in")
    logic = MRSuperRes.MRSuperResLogic()
    t_start = time.perf_counter()
    job = logic.enhance(node, model=str(model), axis=2, direction="in-plane", precision="fp32",
                        maps=not args.no_maps, waitForCompletion=False)
    polls = []
    while True:
        t0 = time.perf_counter()
        status = job.poll()
        polls.append(time.perf_counter() - t0)
        if status != "running":
            break
        time.sleep(0.25)
    if status != "done":
        print(f"the job ended {status}: {job.error}")
        return 1
    out = f"{args.size * 4}x{args.size * 4}x{args.slices}"
    print(f"{'new' if new else 'old'} layout, {args.size}x{args.size}x{args.slices} -> {out}, "
          f"maps {'off' if args.no_maps else 'on'}: longest poll {max(polls):.2f} s of {len(polls)} "
          f"(job {time.perf_counter() - t_start:.0f} s in all)")
    for label, seconds in totals.items():
        print(f"  {label}: {seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
