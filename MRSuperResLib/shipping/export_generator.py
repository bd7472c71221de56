"""Save the raw generator of a run's newest checkpoint as a model file carrying the run's card.

    python scripts/maintainers/export_generator.py RUN_DIR OUT.safetensors --name NAME [--checkpoint ITER]

A run exports its EMA generator; a short fine-tune's EMA (decay 0.999) lags ~1000 iterations
behind, so the next stage of the shipped models starts from the raw generator instead. The
card keeps the run's training record (iterations, learning-rate schedule, data, wall time),
which the next run copies into its own card as `init_provenance`. The work is
`MRSuperResLib.models.checkpoints.checkpoint_generator`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--checkpoint", type=int, default=None, help="iteration of the checkpoint (default: newest)")
    args = parser.parse_args()

    from ..models.cards import renamed_card
    from ..models.checkpoints import checkpoint_generator
    from ..errors import MRSuperResError
    from ..models.weights import save_model

    try:
        model, card = checkpoint_generator(args.run, args.checkpoint)
        card = renamed_card(card, args.name)
        saved = save_model(model, args.out, card)
    except MRSuperResError as exc:
        sys.exit(str(exc))
    print(json.dumps({k: card[k] for k in ("name", "iterations", "wall_seconds", "learning_rate_schedule")}),
          f"sha256 {saved['sha256'][:16]}...")


if __name__ == "__main__":
    main()
