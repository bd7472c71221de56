"""Print the shipped models' figures per subject and contrast as Markdown tables, from their cards

The code lives in MRSuperResLib.shipping.model_table; this runs it from a checkout.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from MRSuperResLib.shipping.model_table import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
