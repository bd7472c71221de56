"""Make a models release: the assets to attach (weights, cards, SHA256SUMS), the registry naming
them, and the weights-free tree the Slicer Extensions Index builds, measured against its rule.

    python scripts/maintainers/release_models.py models-2026.12 --assets /tmp/assets --index-tree /tmp/tree

The code lives in MRSuperResLib.shipping.release; this runs it from a checkout.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from MRSuperResLib.shipping.release import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
