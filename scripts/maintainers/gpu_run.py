"""The GPU run in one command: CUDA checks, then training the x4 fidelity model at GPU scale until its
deadline, ranking, and the best weights split for the way back (docs/gpu_run.md).

The code lives in MRSuperResLib.shipping.gpu_run; this runs it from a checkout.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from MRSuperResLib.shipping.gpu_run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
