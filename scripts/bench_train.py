"""Training speed of the 23-block GAN stage, fp32 vs bf16, measured in one run on this machine.

    .venv/bin/python scripts/bench_train.py [--iters 8] [--batch 4] [--patch 128]

Runs `mrsuperres train --stage gan --init realesrgan` twice (fp32, then bf16) on the bundled
sample and prints iterations per second from the event logs (the first two iterations, which
include warm-up, are left out).
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from MRSuperResLib.events import read_events, start_event

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "Resources" / "SampleData" / "colin27_t1_brain_slab.nii.gz"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=128)
    args = parser.parse_args()
    results = {}
    for precision in ("fp32", "bf16"):
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp) / "run"
            cmd = [sys.executable, "-m", "MRSuperResLib", "train", "--data", str(SAMPLE), "--out", str(run),
                   "--stage", "gan", "--init", "realesrgan", "--iters", str(args.iters), "--batch", str(args.batch),
                   "--patch", str(args.patch), "--precision", precision, "--log-every", "1",
                   "--checkpoint-every", "100000", "--axis", "2"]
            subprocess.run(cmd, check=True, cwd=ROOT)
            events = read_events(run / "events.jsonl")
            times = [e["time"] for e in events if e["event"] == "progress"]
            its = (len(times) - 3) / (times[-1] - times[2])
            start = start_event(events)
            results[precision] = dict(its_per_sec=its, seconds_per_iter=1 / its, device=start["device"],
                                      vgg=start["vgg"])
            print(f"{precision}: {its:.3f} it/s ({1 / its:.2f} s/iter), batch {args.batch}, patch {args.patch}")
    print(f"bf16 speed-up: {results['bf16']['its_per_sec'] / results['fp32']['its_per_sec']:.2f}x")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
