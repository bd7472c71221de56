"""Save the raw generator of a run's newest checkpoint as a model file carrying the run's card.

The code lives in MRSuperResLib.shipping.export_generator; this runs it from a checkout.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from MRSuperResLib.shipping.export_generator import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
