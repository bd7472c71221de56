"""Rank a training run's checkpoints by the shipping protocol, to choose the one to ship.

The code lives in MRSuperResLib.shipping.rank_checkpoints; this runs it from a checkout.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from MRSuperResLib.shipping.rank_checkpoints import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
