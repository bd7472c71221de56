"""The slices a protocol scores: [0, 1]-normalised, blank ones dropped, padded to the scale."""
from __future__ import annotations

import numpy as np

from ..scans import geometry
from ..scans.volumes import intensity_range, normalise


def prepare_slices(data: np.ndarray, axis: int, blank_threshold: float = 0.0):
    """[0, 1]-normalised non-blank slices (N, H, W) of a volume, and their indices."""
    lo, hi = intensity_range(data)
    stack = geometry.slices_first(data, axis)
    peaks = stack.reshape(stack.shape[0], -1).max(1)
    keep = np.flatnonzero((peaks - lo) / (hi - lo) > blank_threshold)
    return normalise(stack[keep], (lo, hi), clip=True), keep


def pad_to_multiple(stack: np.ndarray, multiple: int) -> np.ndarray:
    n, h, w = stack.shape
    return np.pad(stack, ((0, 0), (0, (-h) % multiple), (0, (-w) % multiple)))
