"""Every choice list and default a user can set, in one place that imports neither torch nor numpy.

The command line, the Slicer batch script, the module panel and the logic import these instead of
restating them: the panel reads them before torch is installed. Modules that check a value import
its list from here too, so a new choice is added once.
"""
from __future__ import annotations

import os
from pathlib import Path

# where things are
PROJECT_DIR = Path(__file__).resolve().parent.parent     # the checkout, or the installed extension's folder
SHIPPED_MODELS_DIR = PROJECT_DIR / "Resources" / "Models"
SAMPLE_VOLUME = PROJECT_DIR / "Resources" / "SampleData" / "colin27_t1_brain_slab.nii.gz"
HOME_ENV = "MRSUPERRES_HOME"


def home_dir() -> Path:
    """Where MRSuperRes keeps what it downloads, converts and measures: $MRSUPERRES_HOME or
    ~/.cache/mrsuperres."""
    home = os.environ.get(HOME_ENV)
    return Path(home) if home else Path.home() / ".cache" / "mrsuperres"


# which way a volume is super-resolved
DIRECTIONS = ("auto", "in-plane", "through-plane")
DIRECTION_DEFAULT = "auto"
AXES = ("auto", "0", "1", "2")               # the slice axis; auto: the acquisition's (the thickest)

# how an output is held to its input (pipeline.consistency)
CONSISTENCY_STEPS = ("anchor", "exact", "none")
CONSISTENCY_MODES = ("auto", *CONSISTENCY_STEPS)
CONSISTENCY_DEFAULT = "auto"                 # the model card's step, else CONSISTENCY_FALLBACK
CONSISTENCY_FALLBACK = "anchor"              # measured on five scans x three degradations: docs/consistency.md

# how the network runs (engine)
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ENGINES = ("auto", "torch", "openvino")

# the maps that come with an output
MAP_NAMES = ("consistency", "uncertainty", "detail")

# degradations and baselines (evaluate, compare, training)
DEGRADATIONS = ("bilinear", "bicubic", "kspace")
BASELINES = ("nearest", "bilinear", "bicubic", "lanczos")
SLICE_PROFILES = ("gaussian", "rect")
SLICE_PROFILE_DEFAULT = SLICE_PROFILES[0]     # the shape of a typical excitation
HR_NOISE_SIGMA = (0.005, 0.03)               # --hr-noise: Rician sigma range, fraction of the [0, 1] range

# the models used when none is named
REALESRGAN_MODEL = "realesrgan-x4plus-gray"  # RealESRGAN_x4plus made 1-channel (fetched from PyPI)
MRI_DEFAULT_MODEL = "mri-x4-fidelity"        # the default wherever it is shipped
THICK_DEFAULT_MODEL = "mri-thick-x1"         # the default for through-plane super-resolution
AUTO_FINEST_MM = 0.75                        # through-plane's default spacing: the plane's, no finer than this
LONG_RUN_S = 600                             # through-plane: two orientations estimated longer than this -> one
ORIENTATIONS = ("auto", "1", "2")            # through-plane --orientations
