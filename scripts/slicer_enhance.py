"""Batch enhancement in Slicer or slicer-core, from a source checkout: MRSuperResLib.in_slicer.batch.

    Slicer --no-main-window --python-script scripts/slicer_enhance.py -- --input T1.nii.gz --output out
    python scripts/slicer_enhance.py --input T1.nii.gz --output out           # slicer-core, no app
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from MRSuperResLib.in_slicer.batch import main  # noqa: E402

if __name__ == "__main__":
    main(exit=True)
