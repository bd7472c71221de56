"""How hard each GAN-stage loss pulls on the image: the norm of its gradient with respect to the

The code lives in MRSuperResLib.shipping.loss_gradients; this runs it from a checkout.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from MRSuperResLib.shipping.loss_gradients import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
