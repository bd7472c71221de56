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

MAX_PIXELS_PER_PASS = 1 << 20  # however light the network: one 1024x1024 plane per forward pass

ProgressCallback = Callable[[int, int], None]   # (slices done, slices in all)


def _activations_per_pixel(config: dict) -> float:
    """Channels alive per input pixel at the network's widest point: the trunk (features plus the
    dense blocks' growth, on 1/unshuffle^2 of the pixels) or the output stage (features at
    scale^2 the pixels, two tensors at once)."""
    inner = int(config.get("scale", 4)) * int(config.get("supersample", 1))
    unshuffle = {1: 4, 2: 2}.get(inner, 1)
    feat, grow = int(config.get("num_feat", 64)), int(config.get("num_grow_ch", 32))
    return max((feat + 4 * grow) / unshuffle ** 2, 2 * feat * inner ** 2)


def pixels_per_pass(config: dict) -> int:
    """Input pixels per forward pass for a network of this shape (RRDBNet's config): the budget
    LR_PIXELS_PER_BATCH is sized for the 23-block x4 network, and a network with fewer activations
    per pixel gets proportionally more. The x1 through-plane network (its trunk on a 16th of the
    pixels) then runs a 512 x 438 plane whole instead of in nine overlapping tiles: 2.5x the
    planes per second on one core."""
    reference = _activations_per_pixel({"scale": 4, "num_feat": 64, "num_grow_ch": 32})
    scaled = LR_PIXELS_PER_BATCH * reference / _activations_per_pixel(config)
    return int(min(MAX_PIXELS_PER_PASS, max(MIN_TILE * MIN_TILE, scaled)))


def check_slice_size(h: int, w: int) -> None:
    """Slices the network can run on (the plan checks before anything starts, the engine again)."""
    if min(h, w) < MIN_SLICE:
        raise MRSuperResError(f"slices of {h}x{w} voxels are smaller than the {MIN_SLICE}x{MIN_SLICE} "
                              "the network needs (is another --axis the slice axis?)")
