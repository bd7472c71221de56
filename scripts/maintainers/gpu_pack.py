"""Pack what the GPU run needs (volumes, reader wheels) and measure the travelling tree against the
device machine's 64 MiB (docs/gpu_run.md).

The code lives in MRSuperResLib.shipping.gpu_pack; this runs it from a checkout.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from MRSuperResLib.shipping.gpu_pack import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
