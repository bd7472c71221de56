"""Validate a finished training run and ship its model under Resources/Models with a full card.

    python scripts/maintainers/ship_model.py RUN_DIR --name mri-x4-fidelity [--partner mri-x4-gan] [--select]
    python scripts/maintainers/ship_model.py RUN_DIR --name mri-x4-fidelity --dry-run     # score only, write nothing
    python scripts/maintainers/ship_model.py --rescore --name mri-x4-fidelity

The run's generator (EMA by default; `--select`: the network, EMA or raw, of the checkpoint
whose validation during training had the best mean PSNR over the validation subjects), rounded to fp16 as it ships, is
scored with the evaluate protocol (axial slices, Rashid et al.'s bilinear degradation at the
model's scale) on every validation subject (`datasets.validation_files`, one volume a subject), next to
bicubic, bilinear and the model it would replace (the shipped model of that name, if any). It
ships only if it beats that model on the mean PSNR over the subjects without losing more than
0.1 dB on any one (a new model: if it beats bicubic on every subject), and, for a `gan`-stage
run, if it also keeps the GAN targets on that mean (SSIM >= bicubic, VIF >= bicubic + 0.05);
otherwise nothing is written and the exit status is 1. The independent scans are scored and
reported, never used to decide. The card holds the architecture, init, training data with sha256, degradations, stage,
iterations, batch, device, wall time and the figures per subject and contrast; the first
subject's evaluation folder (metrics.json, per_slice.csv, figure.png) goes to
Resources/Screenshots/<name>-validation/. The figures are of the default inference (bf16 on
this CPU, held to the input by the step the card names, `--consistency`, else anchor), which
the card records. `--rescore` scores a shipped model again
after inference changed and rewrites only its card's figures. Once a model ships, the checks tied
to the shipped weights run with `bash scripts/run_tests.sh -m shipping` (they are not in the unit
suite: a release may change the figures they pin).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..options import PROJECT_DIR

from ..models.cards import describe_volumes
from ..pipeline.consistency import STEPS
from ..models.datasets import BLANK, source_of
from ..errors import MRSuperResError, SlicesTooSmall

# a GAN model's targets, mean gain over bicubic on the validation subjects: its detail must not cost
# structure (SSIM) and must carry information (VIF)
GAN_TARGETS = {"ssim": 0.0, "vif": 0.05}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, nargs="?", help="the training run to ship (not with --rescore)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--rescore", action="store_true",
                        help="score the shipped model NAME again with today's inference and rewrite its card's "
                             "figures (validation, independent check); weights untouched")
    parser.add_argument("--partner", default=None, help="the other model of its fidelity/GAN pair, which --detail "
                        "blends with; its shipped card is made to name this model too")
    parser.add_argument("--val", type=Path, nargs="+", default=None,
                        help="validation volumes, one a subject (default: datasets.validation_files() from the cache)")
    parser.add_argument("--select", action="store_true",
                        help="ship the network (EMA or raw generator) of the checkpoint whose validation during "
                             "training had the best mean PSNR over the validation subjects")
    parser.add_argument("--dry-run", action="store_true", help="score and print the decision; write nothing")
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
    parser.add_argument("--consistency", choices=STEPS, default=None,
                        help="the consistency step the model's card names, which `--consistency auto` (the "
                             "default) then applies; scored with it (default: the step the run validated with, "
                             "train --consistency, if it named one; else none named, so anchor)")
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

    from ..models.cards import shipped_card
    from ..models.catalog import SHIPPED_DIR
    from ..models.checkpoints import checkpoint_generator
    from ..events import read_events, start_event
    from ..models.weights import load_generator, save_model

    events = read_events(args.run / "events.jsonl") if (args.run / "events.jsonl").exists() else []
    checkpoint, weights = best_checkpoint(events) if args.select else (args.checkpoint, args.weights)
    if weights == "generator" or checkpoint is not None:
        try:
            model, run_card = checkpoint_generator(args.run, checkpoint, weights)
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
    val, independent = held_out(args, run_card)
    start = start_event(events)
    if start is None:
        sys.exit(f"{args.run}/events.jsonl has no start event: not a training run")
    # scored, and shipped, with the step its card will name: --consistency, else the one the run validated with
    step = args.consistency or run_step(start["config"], run_card)
    if step:
        model.card = {**(getattr(model, "card", None) or {}), "consistency": step}
    previous = SHIPPED_DIR / f"{args.name}.safetensors"
    previous = load_generator(previous)[0] if previous.exists() else None
    if previous is not None and previous.scale != model.scale:
        sys.exit(f"{args.name} is shipped as an x{previous.scale} model; this run is x{model.scale}")
    validation, table = validate(model, args.name, val, previous, write_figure=not args.dry_run,
                                 gan=start["config"].get("stage") == "gan")
    checked = score_scans(model, args.name, independent, previous, skip_small=True) if independent else None
    print(json.dumps(table, indent=2))
    verdict = validation["decision"]
    print(f"{args.name}: {verdict['reason']}")
    if args.dry_run or not verdict["ships"]:
        sys.exit(0 if args.dry_run else 1)
    card = shipped_card(run_card, start["config"], name=args.name, learning_rate=start.get("lr"),
                        training_data=describe_volumes(run_card.get("training_data")), validation=validation,
                        table=table, independent=checked, partner=args.partner, consistency=step)
    saved = save_model(model.half(), SHIPPED_DIR / f"{args.name}.safetensors", card)
    print(f"shipped {SHIPPED_DIR / (args.name + '.safetensors')} (sha256 {saved['sha256'][:16]}...)")
    if args.partner:
        name_partner(SHIPPED_DIR / f"{args.partner}.safetensors", args.name)


def name_partner(partner_path: Path, name: str) -> None:
    """The shipped partner's card names this model too, so `--detail` works from either side."""
    from ..models.cards import read_card, write_card

    card = read_card(partner_path)
    if card is None:
        print(f"no shipped {partner_path.stem} yet: name {name} as its --partner when shipping it")
    elif card.get("detail_partner") != name:
        write_card(partner_path, {**card, "detail_partner": name})
        print(f"{partner_path.stem}'s card now names {name} as its detail partner")


def run_step(config: dict, run_card: dict) -> str | None:
    """The consistency step a run validated with: its `--consistency`, where that was "auto" the step
    its --init model's card named (kept in the run card's init_provenance); None where none was named."""
    named = config.get("consistency")
    if named == "auto":
        named = (run_card.get("init_provenance") or {}).get("consistency")
    return named if named in STEPS else None


def best_checkpoint(events: list[dict]) -> tuple[int, str]:
    """(iteration, "ema" or "generator") of the kept checkpoint network whose validation during
    training had the best mean PSNR over the validation subjects (each subject counts once). The
    raw generator competes too: while a run still learns fast, the EMA lags behind it."""
    saved = {e["iter"] for e in events if e["event"] == "checkpoint" and Path(e["path"]).exists()}   # still kept
    scored = [(e[who]["psnr"], e["iter"], weights) for e in events if e["event"] == "validation" and e["iter"] in saved
              for who, weights in (("model", "ema"), ("generator", "generator")) if e.get(who)]
    if not scored:
        sys.exit("--select: the run has no validated checkpoint")
    psnr, it, weights = max(scored)
    print(f"selected checkpoint {it} ({weights}): mean validation PSNR {psnr:.3f} dB over its validation subjects")
    return it, weights


def rescore(args) -> None:
    """Score the shipped model `args.name` with today's default inference; rewrite its card's figures."""
    from ..models.cards import card_path, scored_card, write_card
    from ..models.catalog import SHIPPED_DIR
    from ..models.weights import load_generator

    path = SHIPPED_DIR / f"{args.name}.safetensors"
    if not path.exists():
        sys.exit(f"no shipped model {path}")
    model, card = load_generator(path)                       # checks the file against its card's sha256
    val, independent = held_out(args, card)
    validation, table = validate(model, args.name, val, None)
    checked = score_scans(model, args.name, independent, None, skip_small=True) if independent else None
    card = scored_card(card, name=args.name, validation=validation, table=table, independent=checked)
    write_card(path, card)
    print(json.dumps(table, indent=2))
    print(f"re-scored {card_path(path)} (weights unchanged, sha256 {card['sha256'][:16]}...)")


def record_maps(args) -> None:
    """The validation record's map figures (map_scores on the first validation subject, bilinear at the
    model's scale, axial, self-ensemble for the uncertainty map, the GAN partner for the detail map),
    written into the shipped card; weights untouched."""
    from ..models.cards import card_path, write_card
    from ..models.catalog import SHIPPED_DIR
    from ..evaluation.outputs import format_table
    from ..evaluation.protocol import score_as_shipped
    from ..models.weights import load_generator

    path = SHIPPED_DIR / f"{args.name}.safetensors"
    model, card = load_generator(path)
    volume, sha = held_out(args, card)[0][0]
    result = score_as_shipped(volume, model, args.name, maps=True, baselines=("bicubic",))
    print(format_table(result))
    card["validation"] = {**card["validation"], "maps": {
        "volume": volume.name, "sha256": sha, "self_ensemble": True,
        "consistency_step": result["model"]["consistency"], "ranking": result["maps"],
        "data_consistency": result["data_consistency"],
        "ssim_psnr_self_ensemble": {k: round(result["methods"]["model"][k]["mean"], 4) for k in ("ssim", "psnr")},
        "protocol": f"patches of {model.scale}x{model.scale} input voxels with tissue; Spearman of mean |map| vs "
                    "mean |SR - GT|, share of the worst 5% caught by the map's top 5% (MRSuperResLib.evaluation.map_scores)"}}
    write_card(path, card)
    print(f"recorded the maps' figures in {card_path(path)}")


def held_out(args, card: dict) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """The validation volumes and the independent scans as (path, sha256), refusing any of them
    that is among the card's training volumes."""
    from ..options import home_dir
    from ..models.datasets import EVALUATION, validation_files
    from ..files import sha256_of

    trained = {d.get("sha256") for d in card.get("training_data") or []}
    data = home_dir() / "data"
    if args.val is not None:
        val_paths = args.val
    else:
        val_paths = [data / name for name in validation_files()]
    ind_paths = args.independent if args.independent is not None else [data / "evaluation" / n for n in EVALUATION]
    missing = [str(p) for p in [*val_paths, *ind_paths] if not p.exists()]
    if missing:
        sys.exit(f"not found: {', '.join(missing)} (run scripts/fetch_training_data.py, with --evaluation for "
                 "the independent scans)")
    val = [(path, sha256_of(path)) for path in val_paths]
    scans = [(path, sha256_of(path)) for path in ind_paths]
    for path, sha in val:
        if sha in trained:
            sys.exit(f"{path} was trained on: validate on a held-out volume")
    for path, sha in scans:
        if sha in trained:
            sys.exit(f"{path} was trained on: it cannot be an independent check")
    return val, scans


def score_scans(model, name: str, scans: list[tuple[Path, str]], previous, out_dir: Path | None = None,
                skip_small: bool = False) -> list[dict]:
    """Per scan: the evaluate protocol (axial, bilinear at the model's scale) for the model, bicubic,
    bilinear and, where given, the model it would replace; gains over bicubic and over it. The
    validation subjects and the independent scans (never used to decide) are both scored so.
    `skip_small`: a scan whose slices are too small for the scale (an x8 model needs 64 voxels a
    side) is listed as skipped, with the reason, instead of stopping the run."""
    from ..models.datasets import VOLUMES
    from ..evaluation.protocol import score_as_shipped

    keys = ("ssim", "psnr", "vif")
    rows = []
    for i, (path, sha) in enumerate(scans):
        known = source_of(sha)
        spec = VOLUMES.get(known[0], {}) if known else {}
        try:
            result = score_as_shipped(path, model, name, baselines=("bicubic", "bilinear"),
                                      out_dir=out_dir if i == 0 else None)
        except SlicesTooSmall as exc:
            if not skip_small:
                raise
            print(f"{path.name}: skipped, {exc}", flush=True)
            rows.append({"volume": path.name, "sha256": sha, "subject": spec.get("subject"),
                         "contrast": spec.get("contrast"), "skipped": str(exc).split(": ", 1)[-1]})
            continue
        means = {m: {k: round(v[k]["mean"], 4) for k in keys} for m, v in result["methods"].items()}
        row = {"volume": path.name, "sha256": sha, "source": (known or ("", None))[1],
               "subject": spec.get("subject"), "contrast": spec.get("contrast"), "axis": result["axis"][0],
               "slices": result["n_slices"], "inference_precision": result["model"]["precision"],
               "inference_consistency": result["model"]["consistency"],
               "metrics_mean": {name: means["model"], "bicubic": means["bicubic"], "bilinear": means["bilinear"]},
               "gain_over_bicubic": {k: round(means["model"][k] - means["bicubic"][k], 4) for k in keys}}
        if previous is not None:
            before = score_as_shipped(path, previous, "previous", baselines=())["methods"]["model"]
            row["metrics_mean"]["previous"] = {k: round(before[k]["mean"], 4) for k in keys}
            row["gain_over_previous"] = {k: round(means["model"][k] - before[k]["mean"], 4) for k in keys}
        print(f"{path.name} ({row['contrast'] or '?'}): {name} {means['model']}  bicubic {means['bicubic']}  "
              f"gain {row['gain_over_bicubic']}" + (f"  vs previous {row['gain_over_previous']}"
                                                    if previous is not None else ""), flush=True)
        rows.append(row)
    return rows


def decide(rows: list[dict], name: str, has_previous: bool, gan: bool = False) -> dict:
    """Ship only a model that beats the one it replaces on the mean PSNR over the validation subjects
    and loses no more than 0.1 dB on any one; a new model must beat bicubic on every subject. A GAN
    must also keep its targets on the mean over the subjects (GAN_TARGETS: SSIM and VIF over bicubic),
    so that its extra detail is not bought with structure."""
    key = "gain_over_previous" if has_previous else "gain_over_bicubic"
    gains = [r[key]["psnr"] for r in rows]
    mean, worst = sum(gains) / len(gains), min(gains)
    against = f"the shipped {name}" if has_previous else "bicubic"
    ships = mean > 0 and worst >= (-0.1 if has_previous else 0.0)
    reason = (f"mean PSNR gain over {against} {mean:+.3f} dB, "
              f"worst subject {worst:+.3f} dB (needs mean > 0 and worst >= {-0.1 if has_previous else 0.0:+.1f})")
    decision = {"against": against, "mean_psnr_gain": round(mean, 4), "worst_psnr_gain": round(worst, 4)}
    if gan:
        over = {k: sum(r["gain_over_bicubic"][k] for r in rows) / len(rows) for k in GAN_TARGETS}
        ships = ships and all(over[k] >= need for k, need in GAN_TARGETS.items())
        reason += "; over bicubic " + ", ".join(f"{k.upper()} {over[k]:+.4f} (needs >= {need:+.2f})"
                                                for k, need in GAN_TARGETS.items())
        decision["gan_gain_over_bicubic"] = {k: round(v, 4) for k, v in over.items()}
    reason = f"{'ships' if ships else 'does not ship'}: {reason}"
    return {"ships": ships, **decision, "reason": reason}


def validate(model, name: str, scans: list[tuple[Path, str]], previous, write_figure: bool = True,
             gan: bool = False):
    """The card's validation record ({protocol, subjects, mean, decision}) and the table of means over
    the subjects ({method: {metric}}); the first subject's figure and CSV go to Resources/Screenshots."""
    out_dir = PROJECT_DIR / "Resources" / "Screenshots" / f"{name}-validation" if write_figure else None
    rows = score_scans(model, name, scans, previous, out_dir)
    methods = rows[0]["metrics_mean"].keys()
    table = {m: {k: round(sum(r["metrics_mean"][m][k] for r in rows) / len(rows), 4) for k in ("ssim", "psnr", "vif")}
             for m in methods}
    record = {"protocol": f"evaluate: axial slices, bilinear x{model.scale}, per-volume min-max, slices with a "
                          f"[0, 1] maximum <= {BLANK} dropped as blank; one volume a subject, the mean taken "
                          "over subjects",
              "held_out": "not among the training volumes (checked by sha256)",
              "inference_precision": rows[0]["inference_precision"],
              "inference_consistency": rows[0]["inference_consistency"],
              "subjects": rows, "metrics_mean": table,
              "decision": decide(rows, name, previous is not None, gan)}
    return record, table


if __name__ == "__main__":
    main()
