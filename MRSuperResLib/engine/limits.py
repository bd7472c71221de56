"""The engine's fixed sizes and tolerances, and the slice-size rule the plan checks before a run."""
from __future__ import annotations

from typing import Callable

from ..errors import MRSuperResError

MIN_SLICE = 8                    # smallest in-plane LR size (voxels) the network is run on
LR_PIXELS_PER_BATCH = 1 << 16    # LR pixels per forward pass (one 256x256 slice): ~0.7 GB of bf16 activations
TILE_OVERLAP = 8                 # LR pixels shared by neighbouring tiles, blended linearly
TILE_CONTEXT = 32                # LR pixels of slice around a tile that the network also sees
MIN_TILE = 32                    # smallest tile the out-of-memory back-off goes down to
ACCURACY_DB = 45.0               # every fast path must agree with fp32 at least this well (PSNR on [0, 1])

ProgressCallback = Callable[[int, int], None]   # (slices done, slices in all)


def check_slice_size(h: int, w: int) -> None:
    """Slices the network can run on (the plan checks before anything starts, the engine again)."""
    if min(h, w) < MIN_SLICE:
        raise MRSuperResError(f"slices of {h}x{w} voxels are smaller than the {MIN_SLICE}x{MIN_SLICE} "
                              "the network needs (is another --axis the slice axis?)")
