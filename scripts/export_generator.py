"""Save the raw generator of a run's newest checkpoint as a model file carrying the run's card.

    python scripts/export_generator.py RUN_DIR OUT.safetensors --name NAME

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


def raw_generator(run: Path):
    """(model, card) of the raw generator in the run's newest valid checkpoint; the card is the
    run's, with the checkpoint's iteration, wall time, learning-rate schedule and validation."""
    from MRSuperResLib.checkpoints import load_latest
    from MRSuperResLib.weights import load_generator

    model, card = load_generator(run / "model.safetensors")
    found = load_latest(run)
    if found is None:
        sys.exit(f"{run}: no valid checkpoint")
    state, ckpt = found
    model.load_state_dict(state["generator"])
    card = {k: v for k, v in card.items() if k != "sha256"}
    card.update(iterations=int(state["iter"]), wall_seconds=round(float(state["wall_seconds"]), 1),
                weights=f"raw generator of {run.name}/{ckpt.name} (not the EMA)",
                learning_rate_schedule=state.get("lr_schedule"), metrics={"validation": state.get("validation")})
    return model, card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()

    from MRSuperResLib.weights import save_model

    model, card = raw_generator(args.run)
    card["name"] = args.name
    saved = save_model(model, args.out, card)
    print(json.dumps({k: card[k] for k in ("name", "iterations", "wall_seconds", "learning_rate_schedule")}),
          f"sha256 {saved['sha256'][:16]}...")


if __name__ == "__main__":
    main()
