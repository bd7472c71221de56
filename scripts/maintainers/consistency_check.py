#!/usr/bin/env python
"""Measure the consistency step and the maps on volumes with ground truth (docs/consistency.md).

For every volume, degradation (bilinear, bicubic, kspace) and model (fidelity, GAN): the
network's raw output on every `--step`-th non-blank slice, then each consistency mode applied
to it and scored against the truth (SSIM, PSNR, VIF; bicubic for reference); the consistency
map's ranking of the worst patches; and, for --ensemble-degradation, the 8 self-ensemble
passes' spread (uncertainty map) ranked the same way; for the GAN model, the detail map
(|GAN - fidelity| / 2 after the same step) as well. An edge map (gradient magnitude of the
bicubic image) is ranked beside them as the baseline a map has to beat to be more than "errors
are at edges".

    python scripts/maintainers/consistency_check.py VOLUME... [--step 4] [--out consistency.json]
    python scripts/maintainers/consistency_check.py VOLUME... --models mri-x2-fidelity --ensemble-degradation none   # x2
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from MRSuperResLib.pipeline import consistency
from MRSuperResLib.scans import geometry  # noqa: E402
from MRSuperResLib.models.catalog import load_model  # noqa: E402
from MRSuperResLib.evaluation.slices import pad_to_multiple, prepare_slices  # noqa: E402
from MRSuperResLib.engine.calibration import make_runner
from MRSuperResLib.pipeline.enhance import super_resolve_slices  # noqa: E402
from MRSuperResLib.evaluation.map_scores import Ranking  # noqa: E402
from MRSuperResLib.evaluation.metrics import score_slices  # noqa: E402
from MRSuperResLib.options import DEGRADATIONS  # noqa: E402
from MRSuperResLib.scans.resample import downsample, upsample  # noqa: E402
from MRSuperResLib.scans.volumes import read_volume, stem  # noqa: E402

FIDELITY, GAN = "mri-x4-fidelity", "mri-x4-gan"


def edge_map(image: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(image, axis=(1, 2))
    return np.hypot(gy, gx)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("volumes", nargs="+")
    ap.add_argument("--models", nargs="+", default=["mri-x4-fidelity", "mri-x4-gan"])
    ap.add_argument("--degradations", nargs="+", default=list(DEGRADATIONS))
    ap.add_argument("--ensemble-degradation", default="bilinear", help="none: skip the 8-pass maps")
    ap.add_argument("--step", type=int, default=4, help="score every step-th non-blank slice")
    ap.add_argument("--out", default="consistency.json")
    args = ap.parse_args()
    t_start = time.time()
    rows, rankings = [], {}
    runners = {name: make_runner(load_model(name)[0], precision="auto") for name in args.models}
    scales = {e.scale for e in runners.values()}
    if len(scales) != 1:
        sys.exit("--models must share one scale (the volumes are reduced by it)")
    scale = scales.pop()
    for path in args.volumes:
        vol = read_volume(path)
        ax = geometry.choose_axis("auto", vol.affine, vol.data.shape)
        gt, keep = prepare_slices(vol.data, ax)
        gt, keep = gt[::args.step], keep[::args.step]
        n, h, w = gt.shape
        for deg in args.degradations:
            lr = np.clip(downsample(pad_to_multiple(gt, scale), scale, deg), 0, 1)
            bicubic = np.clip(upsample(lr, scale, "bicubic"), 0, 1)
            edges = edge_map(bicubic)[:, :h, :w]
            raws, residuals, seconds = {}, {}, {}
            for name, runner in runners.items():
                t0 = time.time()
                residuals[name] = np.empty(lr.shape, np.float32)
                raws[name] = super_resolve_slices(runner, lr, consistency="none", residual=residuals[name])
                seconds[name] = time.time() - t0
            for name in runners:
                outputs = {}
                for mode in consistency.STEPS:
                    t0 = time.time()
                    outputs[mode] = consistency.apply(raws[name], lr, mode)[:, :h, :w]
                    rows.append(dict(model=name, volume=stem(path), degradation=deg, mode=mode,
                                     step_seconds=time.time() - t0, network_seconds=seconds[name]))
                outputs["bicubic"] = bicubic[:, :h, :w]
                _, summary = score_slices(gt, outputs, keep)
                for r in rows[-len(consistency.MODES):]:
                    r.update({k: summary[r["mode"]][k]["mean"] for k in ("ssim", "psnr", "vif")})
                rows.append(dict(model=name, volume=stem(path), degradation=deg, mode="bicubic",
                                 **{k: summary["bicubic"][k]["mean"] for k in ("ssim", "psnr", "vif")}))
                cmap = consistency.on_output_grid(residuals[name], scale)[:, :h, :w]
                for mode in consistency.STEPS:
                    maps = {"consistency": cmap, "edges (baseline)": edges}
                    if name == GAN and FIDELITY in raws:     # the detail map: |GAN - fidelity| / 2, same step
                        maps["detail"] = np.abs(outputs[mode] - consistency.apply(raws[FIDELITY], lr, mode)[:, :h, :w]) / 2
                    rankings.setdefault(f"{name}|{deg}|{mode}|single", Ranking(scale)).add(gt, outputs[mode], maps)
                if deg == args.ensemble_degradation:
                    spread = np.empty(raws[name].shape, np.float32)
                    res8 = np.empty(lr.shape, np.float32)
                    t0 = time.time()
                    sr8 = super_resolve_slices(runners[name], lr, self_ensemble=True, consistency=consistency.DEFAULT,
                                               spread=spread, residual=res8)[:, :h, :w]
                    rows.append(dict(model=name, volume=stem(path), degradation=deg, mode="ensemble-default",
                                     network_seconds=time.time() - t0, single_seconds=seconds[name]))
                    rankings.setdefault(f"{name}|{deg}|{consistency.for_model(consistency.DEFAULT, runners[name].network)}|ensemble", Ranking(scale)).add(
                        gt, sr8, {"consistency": consistency.on_output_grid(res8, scale)[:, :h, :w],
                                  "uncertainty": spread[:, :h, :w], "edges (baseline)": edges})
                print(f"{name} {stem(path)} {deg}: " + ", ".join(
                    f"{r['mode']} {r.get('ssim', float('nan')):.4f}/{r.get('psnr', float('nan')):.2f}"
                    for r in rows if r["model"] == name and r["volume"] == stem(path) and r["degradation"] == deg
                    and "ssim" in r), flush=True)
    result = {"cpu": platform.processor() or platform.machine(), "seconds": time.time() - t_start,
              "step": args.step, "scale": scale, "rows": rows,
              "rankings": {k: r.scores() for k, r in rankings.items()}}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print_tables(result)
    return 0


def print_tables(result: dict) -> None:
    rows = result["rows"]
    print("\nmean over volumes, SSIM / PSNR / VIF")
    for model in sorted({r["model"] for r in rows}):
        for deg in sorted({r["degradation"] for r in rows}):
            cells = []
            for mode in (*consistency.MODES, "bicubic"):
                sel = [r for r in rows if (r["model"], r["degradation"], r["mode"]) == (model, deg, mode)]
                if sel:
                    cells.append(f"{mode} " + " / ".join(f"{np.mean([r[k] for r in sel]):.4f}"
                                                         for k in ("ssim", "psnr", "vif")))
            print(f"{model} {deg}: " + " | ".join(cells))
    print("\nmap rankings (Spearman, share of worst 5% caught)")
    for key, scores in result["rankings"].items():
        print(key + ": " + " | ".join(f"{m} {s['spearman']:+.3f} {100 * s['top_caught']:.0f}%"
                                      for m, s in scores.items() if s["spearman"] is not None))


if __name__ == "__main__":
    sys.exit(main())
