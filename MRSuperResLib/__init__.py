"""MRSuperResLib: 1-channel Real-ESRGAN super-resolution of MRI volumes, without Qt or Slicer.

    from MRSuperResLib import read_volume, load_model, enhance_volume, write_volume
    model, card = load_model("realesrgan-x4plus-gray")        # or a path to weights
    hr, facts = enhance_volume(read_volume("t1.nii.gz"), model, axis="auto")
    write_volume(hr, "t1_sr.nii.gz")
"""
__version__ = "0.1.0"

from .catalog import available_models, load_model, resolve_model  # noqa: E402
from .errors import Cancelled, MRSuperResError  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .inference import enhance_volume, super_resolve_slices  # noqa: E402
from .rrdbnet import RRDBNet  # noqa: E402
from .volumes import Volume, read_volume, write_volume  # noqa: E402
from .weights import load_generator, save_model  # noqa: E402

__all__ = ["Cancelled", "MRSuperResError", "RRDBNet", "Volume", "available_models", "enhance_volume",
           "evaluate", "load_generator", "load_model", "read_volume", "resolve_model", "save_model",
           "super_resolve_slices", "write_volume"]
