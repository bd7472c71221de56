"""Score a finished through-plane training run on held-out ground truth and ship it with a card.

    python scripts/maintainers/ship_thick_model.py RUN_DIR --name mri-thick-x1 [--val GT.nii.gz ...] [--thickness 4 5 6]
        [--profiles gaussian rect] [--describe FILE=SOURCE ...]

The run's EMA generator is scored with `evaluate --degrade thick` (contiguous slices of each
profile) on volumes held out from its training, at each thickness, against cubic interpolation
across the slices (a volume the datasets module does not know is named by --describe); the card
keeps the run's record (architecture, init, training data with sha256, slice profile ranges,
iterations, device, wall time; a run continued from the shipped model adds to its runs) and adds
those figures, the inference precision they were measured with and the date. Weights are written
as they are (fp32).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from MRSuperResLib.models.cards import describe_volumes
from MRSuperResLib.options import SLICE_PROFILE_DEFAULT, SLICE_PROFILES, home_dir
from MRSuperResLib.models.datasets import source_of
from MRSuperResLib.evaluation.thick import evaluate_thick
from MRSuperResLib.files import sha256_of
from MRSuperResLib.models.weights import load_generator, save_model

ROOT = Path(__file__).resolve().parents[2]
RUN_FACTS = ("init", "training_data", "iterations", "learning_rate", "hr_noise", "slice_profile", "wall_seconds",
             "device", "precision")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--val", type=Path, nargs="+", default=[home_dir() / "data" / "colin27-ch2.nii.gz"])
    parser.add_argument("--thickness", type=float, nargs="+", default=[4.0, 5.0, 6.0])
    parser.add_argument("--profiles", nargs="+", default=[SLICE_PROFILE_DEFAULT], choices=SLICE_PROFILES)
    parser.add_argument("--describe", nargs="*", default=[], metavar="FILE=SOURCE",
                        help="where a validation volume the datasets module does not list comes from")
    args = parser.parse_args()
    model, card = load_generator(args.run / "model.safetensors")
    trained_on = {v["sha256"] for v in card.get("training_data") or []}
    figures = {}
    described = dict(item.split("=", 1) for item in args.describe)
    for path in args.val:
        sha = sha256_of(path)
        if sha in trained_on:
            raise SystemExit(f"{path} was trained on: choose held-out volumes")
        source = source_of(sha)
        for profile, thickness in [(p, t) for p in args.profiles for t in args.thickness]:
            result = evaluate_thick([str(path)], model, thickness=thickness, profile=profile)
            figures[f"{path.name} {thickness:g} mm {profile}"] = {
                "volume": {"file": path.name, "sha256": sha,
                           "source": source[1] if source else described.get(path.name)},
                "orientations": {o: {m: {k: round(v[k]["mean"], 4) for k in ("psnr", "ssim", "vif")}
                                     for m, v in methods.items()}
                                 for o, methods in result["orientations"].items()},
                "precision": result["model"]["precision"], "engine": result["model"]["engine"]}
            perp = result["orientations"]["perpendicular"]
            print(f"{path.name} {thickness:g} mm {profile}, perpendicular: model PSNR "
                  f"{perp['model']['psnr']['mean']:.2f} "
                  f"SSIM {perp['model']['ssim']['mean']:.4f}; cubic {perp['cubic']['psnr']['mean']:.2f} / "
                  f"{perp['cubic']['ssim']['mean']:.4f}", flush=True)
    card = {**card, "name": args.name, "training_data": describe_volumes(card.get("training_data")),
            "description": "MRSuperRes through-plane model (x1): makes thick-slice scans finer across their slices "
                           "(enhance --direction through-plane); fine-tune it on a scan with train --self",
            "metrics": {"held_out": figures, "protocol": "evaluate --degrade thick: contiguous slices of the "
                        "profile named along the axial axis; model (both orientations averaged, not anchored) "
                        "against cubic "
                        "interpolation across the slices; SSIM/PSNR/VIF on [0,1], blank slices dropped",
                        "date": time.strftime("%Y-%m-%d")}}
    card.pop("sha256", None)
    card.pop("file", None)
    target = ROOT / "Resources" / "Models" / f"{args.name}.safetensors"
    previous = target.with_suffix(".json")
    if previous.exists() and str(card.get("init", "")).startswith(args.name):      # continued from the shipped one
        before = json.loads(previous.read_text())
        runs = before.get("training_runs") or [{k: before.get(k) for k in RUN_FACTS}]
        card["training_runs"] = runs + [{k: card.get(k) for k in RUN_FACTS}]
        card["iterations_total"] = sum(r.get("iterations") or 0 for r in card["training_runs"])
        card["wall_seconds_total"] = round(sum(r.get("wall_seconds") or 0 for r in card["training_runs"]), 1)
    saved = save_model(model, target, card)
    print(f"wrote {target} ({target.stat().st_size / 2**20:.1f} MB, sha256 {saved['sha256'][:12]})")
    print(json.dumps(figures, indent=1)[:2000])


if __name__ == "__main__":
    main()
