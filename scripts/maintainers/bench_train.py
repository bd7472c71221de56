"""Training speed of the 23-block generator, psnr and gan stages, at the precision `auto` chooses
and at fp32 and bf16, measured in one run on this machine.

    .venv/bin/python scripts/maintainers/bench_train.py [--iters 8] [--batch 4] [--patch 128] [--stages psnr,gan]

Runs `mrsuperres train --stage S --precision P` (23 blocks from scratch: the speed does not depend
on the starting weights) on the bundled sample and prints iterations per second from the event
logs (the first two iterations, which include warm-up, are left out), with what `auto` chose and why.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from MRSuperResLib.events import read_events, start_event

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "Resources" / "SampleData" / "colin27_t1_brain_slab.nii.gz"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--stages", default="psnr,gan")
    args = parser.parse_args()
    results = {}
    for stage, precision in [(s, p) for s in args.stages.split(",") for p in ("auto", "fp32", "bf16")]:
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp) / "run"
            cmd = [sys.executable, "-m", "MRSuperResLib", "train", "--data", str(SAMPLE), "--out", str(run),
                   "--stage", stage, "--init", "scratch", "--iters", str(args.iters), "--batch", str(args.batch),
                   "--patch", str(args.patch), "--precision", precision, "--log-every", "1",
                   "--checkpoint-every", "100000", "--axis", "2"]
            subprocess.run(cmd, check=True, cwd=ROOT)
            events = read_events(run / "events.jsonl")
            times = [e["time"] for e in events if e["event"] == "progress"]
            its = (len(times) - 3) / (times[-1] - times[2])
            start = start_event(events)
            results[f"{stage} {precision}"] = dict(its_per_sec=its, seconds_per_iter=1 / its, device=start["device"],
                                                   precision=start.get("precision"), why=start.get("precision_why"))
            print(f"{stage} {precision}: {its:.3f} it/s ({1 / its:.2f} s/iter), ran {start.get('precision')}, "
                  f"batch {args.batch}, patch {args.patch}" + (f" ({start.get('precision_why')})"
                                                               if precision == "auto" else ""), flush=True)
    for stage in args.stages.split(","):
        fp32, bf16 = results[f"{stage} fp32"]["its_per_sec"], results[f"{stage} bf16"]["its_per_sec"]
        print(f"{stage}: bf16 {bf16 / fp32:.2f}x fp32; auto {results[f'{stage} auto']['its_per_sec'] / max(fp32, bf16):.2f}x "
              "the faster of the two")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
