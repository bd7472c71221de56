"""How close each model's texture is to the truth, beyond PSNR/SSIM/VIF.

The code lives in MRSuperResLib.shipping.texture_check; this runs it from a checkout.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from MRSuperResLib.shipping.texture_check import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
