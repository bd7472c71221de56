"""Validate a finished training run and ship its model under Resources/Models with a full card.

The code lives in MRSuperResLib.shipping.ship_model; this runs it from a checkout.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from MRSuperResLib.shipping.ship_model import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
