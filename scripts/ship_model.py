"""Validate a finished training run and ship its model under Resources/Models with a full card.

    python scripts/ship_model.py RUN_DIR --name mri-x4-fidelity [--partner mri-x4-gan]
                                 [--val ~/.cache/mrsuperres/data/colin27-ch2.nii.gz]
    python scripts/ship_model.py --rescore --name mri-x4-fidelity


The run's EMA generator, rounded to fp16 as it ships, is scored with the evaluate protocol
(axial slices, Rashid et al.'s bilinear x4) on a volume held out from training, next to bicubic,
bilinear, nearest, lanczos and the unadapted RealESRGAN_x4plus; it is written as fp16
safetensors with a card holding
the architecture, init, training data with sha256, degradations, stage, iterations, batch,
device, wall time and the validation table. The evaluation folder (metrics.json,
per_slice.csv, figure.png) goes to Resources/Screenshots/<name>-validation/ for the README.
The figures are of the default inference (bf16 on this CPU, anchored to the input), which the
card records. `--rescore` scores a shipped model again after inference changed and rewrites
only its card's figures: the weights file, and so its sha256, stay as they are.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from MRSuperResLib import geometry
from MRSuperResLib.cards import describe_volumes
from MRSuperResLib.datasets import source_of
from MRSuperResLib.errors import MRSuperResError

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, nargs="?", help="the training run to ship (not with --rescore)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--rescore", action="store_true",
                        help="score the shipped model NAME again with today's inference and rewrite its card's "
                             "figures (validation, independent check); weights untouched")
    parser.add_argument("--partner", default=None, help="the other model of its fidelity/GAN pair, which --detail "
                        "blends with (give it when shipping either one, so both cards name each other)")
    from MRSuperResLib.catalog import home_dir
    parser.add_argument("--val", type=Path, default=home_dir() / "data" / "colin27-ch2.nii.gz")
    parser.add_argument("--independent", type=Path, nargs="*", default=None,
                        help="real scans of other subjects to check the model on too (default: those "
                             "`fetch_training_data.py --evaluation` put in the cache)")
    parser.add_argument("--weights", choices=("ema", "generator"), default="ema",
                        help="ema: the run's exported EMA generator (default); generator: the raw generator of "
                             "the run's newest checkpoint (an EMA with decay 0.999 lags ~1000 iterations behind "
                             "a short fine-tune)")
    parser.add_argument("--checkpoint", type=int, default=None,
                        help="take the weights from the run's checkpoint at this iteration (e.g. a GAN checkpoint "
                             "picked by validation VIF) instead of the run's exported model (EMA) or newest "
                             "checkpoint (generator)")
    parser.add_argument("--record-maps", action="store_true",
                        help="score how well the shipped model NAME's consistency and uncertainty maps rank its "
                             "errors on the validation volume (8 self-ensemble passes) and add that to its card")
    args = parser.parse_args()
    if args.record_maps:
        record_maps(args)
        return
    if args.rescore != (args.run is None):
        parser.error("give a RUN to ship, or --rescore (and no RUN) to re-score a shipped model")
    if args.rescore:
        rescore(args)
        return

    from MRSuperResLib.cards import shipped_card
    from MRSuperResLib.catalog import SHIPPED_DIR
    from MRSuperResLib.checkpoints import checkpoint_generator
    from MRSuperResLib.events import read_events, start_event
    from MRSuperResLib.weights import load_generator, save_model

    if args.weights == "generator" or args.checkpoint is not None:
        try:
            model, run_card = checkpoint_generator(args.run, args.checkpoint, args.weights)
        except MRSuperResError as exc:
            sys.exit(str(exc))
    else:
        model, run_card = load_generator(args.run / "model.safetensors")
    # the weights ship in fp16: round them first, so every figure in the card is the shipped file's
    # (on pyradiomics brain2 the rounding alone moved the mean SSIM by 0.004)
    model = model.half().float()
    if not run_card.get("training_data"):         # a run still going has no card: nothing to check against
        sys.exit(f"{args.run} has no training record (model.json): stop the run (STOP file) before shipping")
    # every held-out volume is checked before any of the (long) evaluations starts
    val_sha, independent = held_out(args, run_card)
    start = start_event(read_events(args.run / "events.jsonl"))
    if start is None:
        sys.exit(f"{args.run}/events.jsonl has no start event: not a training run")
    validation, table = validate(model, args.name, args.val, val_sha)
    checked = independent_check(model, args.name, independent) if independent else None
    card = shipped_card(run_card, start["config"], name=args.name, learning_rate=start.get("lr"),
                        training_data=describe_volumes(run_card.get("training_data")), validation=validation,
                        table=table, independent=checked, partner=args.partner)
    saved = save_model(model.half(), SHIPPED_DIR / f"{args.name}.safetensors", card)
    print(json.dumps(table, indent=2))
    print(f"shipped {SHIPPED_DIR / (args.name + '.safetensors')} (sha256 {saved['sha256'][:16]}...)")


def rescore(args) -> None:
    """Score the shipped model `args.name` with today's default inference; rewrite its card's figures."""
    from MRSuperResLib.cards import card_path, scored_card, write_card
    from MRSuperResLib.catalog import SHIPPED_DIR
    from MRSuperResLib.weights import load_generator

    path = SHIPPED_DIR / f"{args.name}.safetensors"
    if not path.exists():
        sys.exit(f"no shipped model {path}")
    model, card = load_generator(path)                       # checks the file against its card's sha256
    val_sha, independent = held_out(args, card)
    validation, table = validate(model, args.name, args.val, val_sha)
    checked = independent_check(model, args.name, independent) if independent else None
    card = scored_card(card, name=args.name, validation=validation, table=table, independent=checked)
    write_card(path, card)
    print(json.dumps(table, indent=2))
    print(f"re-scored {card_path(path)} (weights unchanged, sha256 {card['sha256'][:16]}...)")


def record_maps(args) -> None:
    """The validation record's map figures (map_scores on the validation volume, bilinear x4, axial,
    self-ensemble for the uncertainty map, the GAN partner for the detail map), written into the shipped
    card; weights untouched."""
    from MRSuperResLib.cards import card_path, write_card
    from MRSuperResLib.catalog import SHIPPED_DIR
    from MRSuperResLib.evaluate import evaluate, format_table
    from MRSuperResLib.weights import load_generator

    path = SHIPPED_DIR / f"{args.name}.safetensors"
    model, card = load_generator(path)
    val_sha, _ = held_out(args, card)
    result = evaluate([str(args.val)], model, model_name=args.name, scale=4, degradation="bilinear", axis=2,
                      maps=True, baselines=("bicubic",))
    print(format_table(result))
    card["validation"] = {**card["validation"], "maps": {
        "volume": args.val.name, "sha256": val_sha, "self_ensemble": True,
        "consistency_step": result["model"]["consistency"], "ranking": result["maps"],
        "data_consistency": result["data_consistency"],
        "ssim_psnr_self_ensemble": {k: round(result["methods"]["model"][k]["mean"], 4) for k in ("ssim", "psnr")},
        "protocol": "patches of 4x4 input voxels with tissue; Spearman of mean |map| vs mean |SR - GT|, "
                    "share of the worst 5% caught by the map's top 5% (MRSuperResLib.map_scores)"}}
    write_card(path, card)
    print(f"recorded the maps' figures in {card_path(path)}")


def held_out(args, card: dict) -> tuple[str, list[tuple[Path, str]]]:
    """The validation volume's sha256 and the independent scans as (path, sha256), refusing
    any of them that is among the card's training volumes."""
    from MRSuperResLib.catalog import home_dir
    from MRSuperResLib.files import sha256_of

    trained = {d.get("sha256") for d in card.get("training_data") or []}
    val_sha = sha256_of(args.val)
    if val_sha in trained:
        sys.exit(f"{args.val} was trained on: validate on a held-out volume")
    paths = (args.independent if args.independent is not None
             else sorted((home_dir() / "data" / "evaluation").glob("*.*")))
    scans = [(path, sha256_of(path)) for path in paths]
    for path, sha in scans:
        if sha in trained:
            sys.exit(f"{path} was trained on: it cannot be an independent check")
    return val_sha, scans


def validate(model, name: str, val: Path, val_sha: str) -> tuple[dict, dict]:
    """The card's validation record and its table (model, unadapted RealESRGAN_x4plus, the
    interpolations) on the held-out volume; the figure and CSV go to Resources/Screenshots."""
    from MRSuperResLib.catalog import REALESRGAN_MODEL, load_model
    from MRSuperResLib.evaluate import evaluate, format_table

    out_dir = ROOT / "Resources" / "Screenshots" / f"{name}-validation"     # README material, not shipped
    result = evaluate([str(val)], model, model_name=name, scale=4, degradation="bilinear", axis=2, out_dir=out_dir)
    print(format_table(result))
    unadapted, _ = load_model(REALESRGAN_MODEL)
    base = evaluate([str(val)], unadapted, model_name=REALESRGAN_MODEL, scale=4, degradation="bilinear",
                    axis=2, baselines=())
    methods = {name: result["methods"]["model"], REALESRGAN_MODEL: base["methods"]["model"],
               **{m: v for m, v in result["methods"].items() if m != "model"}}
    table = {m: {k: round(v[k]["mean"], 4) for k in ("ssim", "psnr", "nrmse", "vif")} for m, v in methods.items()}
    record = {"volume": str(val.name), "sha256": val_sha, "source": (source_of(val_sha) or ("", None))[1],
              "held_out": "not among the training volumes (checked by sha256)",
              "protocol": "evaluate: axial slices (axis 2), bilinear x4, per-volume min-max, blank slices dropped",
              "slices": result["n_slices"], "inference_precision": result["model"]["precision"],
              "inference_consistency": result["model"]["consistency"], "metrics_mean": table,
              "consistency_map": result["maps"].get("consistency")}
    return record, table


def independent_check(model, name: str, scans: list[tuple[Path, str]]) -> list[dict]:
    """The evaluate protocol (axial slices, bilinear x4) on (path, sha256) scans of subjects
    never trained on (main checked that)."""
    from MRSuperResLib.evaluate import evaluate
    from MRSuperResLib.volumes import read_volume

    rows = []
    for path, sha in scans:
        axis = geometry.axial_axis(read_volume(str(path)).affine)
        result = evaluate([str(path)], model, model_name=name, scale=4, degradation="bilinear", axis=axis,
                          baselines=("bicubic", "bilinear"))
        means = {m: {k: round(v[k]["mean"], 4) for k in ("ssim", "psnr", "vif")} for m, v in result["methods"].items()}
        gain = {k: round(means["model"][k] - means["bicubic"][k], 4) for k in ("ssim", "psnr", "vif")}
        rows.append({"volume": path.name, "sha256": sha, "source": (source_of(sha) or ("", None))[1],
                     "axis": axis, "slices": result["n_slices"],
                     "metrics_mean": {name: means["model"], "bicubic": means["bicubic"],
                                      "bilinear": means["bilinear"]}, "gain_over_bicubic": gain})
        print(f"independent {path.name}: {name} {means['model']}  bicubic {means['bicubic']}  gain {gain}")
    return rows


if __name__ == "__main__":
    main()
