"""Save the raw generator of a run's newest checkpoint as a model file carrying the run's card.

    python scripts/export_generator.py RUN_DIR OUT.safetensors --name NAME [--checkpoint ITER]

A run exports its EMA generator; a short fine-tune's EMA (decay 0.999) lags ~1000 iterations
behind, so the next stage of the shipped models starts from the raw generator instead. The
card keeps the run's training record (iterations, learning-rate schedule, data, wall time),
which the next run copies into its own card as `init_provenance`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def checkpoint_generator(run: Path, checkpoint: int | None = None, weights: str = "generator"):
    """(model, card) of the raw generator (or the EMA, weights="ema") in the run's checkpoint at
    iteration `checkpoint` (default: the newest valid one); the card is the run's, with that
    checkpoint's iteration, wall time, learning-rate schedule and validation (a run still going has
    no card yet: then only the name and the checkpoint's record)."""
    from MRSuperResLib.checkpoints import checkpoint_dir, load_latest, read_checkpoint
    from MRSuperResLib.weights import build_generator, read_card

    card = read_card(run / "model.safetensors") or {"name": run.name}
    if checkpoint is None:
        found = load_latest(run)
        if found is None:
            sys.exit(f"{run}: no valid checkpoint")
        state, ckpt = found
    else:
        ckpt = checkpoint_dir(run) / f"ckpt_{checkpoint:08d}.pt"
        try:
            state = read_checkpoint(ckpt)
        except Exception as exc:        # missing, truncated or not a training checkpoint
            sys.exit(f"{ckpt}: {' '.join(str(exc).split())[:160]}")
    model = build_generator(state["generator" if weights == "generator" else "ema"], source=str(ckpt))
    what = "raw generator" if weights == "generator" else f"EMA generator (decay {state['config'].get('ema_decay')})"
    card = {k: v for k, v in card.items() if k != "sha256"}
    card.update(iterations=int(state["iter"]), wall_seconds=round(float(state["wall_seconds"]), 1),
                weights=f"{what} of {run.name}/{ckpt.name}",
                learning_rate_schedule=state.get("lr_schedule"), metrics={"validation": state.get("validation")})
    return model, card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--checkpoint", type=int, default=None, help="iteration of the checkpoint (default: newest)")
    args = parser.parse_args()

    from MRSuperResLib.weights import save_model

    model, card = checkpoint_generator(args.run, args.checkpoint)
    card["name"] = args.name
    saved = save_model(model, args.out, card)
    print(json.dumps({k: card[k] for k in ("name", "iterations", "wall_seconds", "learning_rate_schedule")}),
          f"sha256 {saved['sha256'][:16]}...")


if __name__ == "__main__":
    main()
