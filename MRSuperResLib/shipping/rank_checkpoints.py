"""Rank a training run's checkpoints by the shipping protocol, to choose the one to ship.

    python scripts/maintainers/rank_checkpoints.py RUN [--iters 3200 3400] [--last 4] [--every 2] [--against mri-x4-fidelity]

The validation a run makes while it trains scores a few crops a subject, too few to choose between
checkpoints a few hundredths of a dB apart. This scores each candidate (the EMA and the raw
generator of each checkpoint asked for; default: the newest `--last` kept ones) as
`ship_model.py` does (`evaluation.protocol.score_as_shipped`: axial, Rashid et al.'s bilinear degradation
at the model's scale, default inference, blank slices as `datasets.BLANK`; fp16 weights) on one
non-blank slice in `--every` of each validation subject (`datasets.validation_files()`), beside the shipped model
`--against`. It prints the gains over bicubic per subject and their mean, best first, and the
`ship_model.py` command for the best. The independent scans are not scored: they choose nothing.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..options import home_dir
from ..models.checkpoints import checkpoint_iteration, list_checkpoints
from ..models.candidates import load_network
from ..models.datasets import validation_files
from ..errors import MRSuperResError
from ..evaluation.protocol import score_as_shipped


def main(argv: list[str] | None = None) -> None:
    try:
        run(argv)
    except MRSuperResError as exc:                # bad input: one line, nothing written
        raise SystemExit(f"rank_checkpoints: {exc}") from None


def candidates(run_dir: Path, iters: list[int] | None, last: int) -> list[str]:
    """RUN:ITER:ema and RUN:ITER:generator specs (load_network) of the checkpoints asked for."""
    kept = sorted(checkpoint_iteration(p) for p in list_checkpoints(run_dir))
    if not kept:
        raise MRSuperResError(f"{run_dir}: no checkpoints")
    missing = sorted(set(iters or []) - set(kept))
    if missing:
        raise MRSuperResError(f"{run_dir} keeps no checkpoint at iteration {', '.join(map(str, missing))} "
                              f"(kept: {kept[0]} to {kept[-1]})")
    chosen = sorted(iters) if iters else kept[-last:]
    return [f"{run_dir}:{it}:{weights}" for it in chosen for weights in ("ema", "generator")]


def gains(model, volumes: list[Path], every: int) -> list[tuple[float, float]]:
    """(PSNR dB, SSIM) gain over bicubic on each volume."""
    out = []
    for path in volumes:
        methods = score_as_shipped(path, model, "candidate", baselines=("bicubic",), every=every)["methods"]
        out.append(tuple(methods["model"][k]["mean"] - methods["bicubic"][k]["mean"] for k in ("psnr", "ssim")))
    return out


def run(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--iters", type=int, nargs="+", default=None, help="checkpoints to score (default: --last)")
    parser.add_argument("--last", type=int, default=4, help="score the newest N kept checkpoints")
    parser.add_argument("--every", type=int, default=2, help="score one non-blank axial slice in N")
    parser.add_argument("--against", default=None, help="a shipped model to score beside them (default: none)")
    parser.add_argument("--val", type=Path, nargs="+", default=None,
                        help="validation volumes, one a subject (default: datasets.validation_files() from the cache)")
    args = parser.parse_args(argv)
    for option, value in (("--last", args.last), ("--every", args.every)):
        if value < 1:
            raise MRSuperResError(f"{option} must be at least 1, not {value}")
    specs = candidates(args.run, args.iters, args.last)
    paths = args.val or [home_dir() / "data" / name for name in validation_files()]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise MRSuperResError(f"not found: {', '.join(missing)} (run scripts/fetch_training_data.py)")
    if args.against:
        specs.insert(0, args.against)
    rows = []
    for spec in specs:
        model = load_network(spec)
        if model.scale == 1:
            raise MRSuperResError(f"{spec} is a through-plane model: rank it with scripts/maintainers/ship_thick_model.py")
        per = gains(model, paths, args.every)
        rows.append((float(np.mean([p for p, _ in per])), spec, per))
        print(f"scored {spec}: mean {rows[-1][0]:+.3f} dB", flush=True)
    names = " | ".join(p.name.split(".")[0] for p in paths)
    print(f"\ngain over bicubic, PSNR dB / SSIM; one non-blank axial slice in {args.every}\n")
    print(f"| candidate | {names} | mean |\n|---|{'---|' * len(paths)}---|")
    for mean, spec, per in sorted(rows, reverse=True):
        label = spec.replace(f"{args.run}:", "") if spec != args.against else f"{spec} (shipped)"
        cells = " | ".join(f"{p:+.3f} / {s:+.4f}" for p, s in per)
        print(f"| {label} | {cells} | {mean:+.3f} / {np.mean([s for _, s in per]):+.4f} |")
    best = max((r for r in rows if r[1] != args.against), key=lambda r: r[0])
    it, weights = best[1].rsplit(":", 2)[1:]
    print(f"\nbest: python scripts/maintainers/ship_model.py {args.run} --name NAME --checkpoint {it} --weights {weights}")


if __name__ == "__main__":
    main()
