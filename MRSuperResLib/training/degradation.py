"""Random low-resolution simulation for training, on HR patches in [0, 1].

`bilinear`, `bicubic` and `kspace` are the fixed degradations of `resample` (Rashid et al.'s
bilinear x s among them). `mri` is a high-order, MRI-specific chain in the spirit of
Real-ESRGAN's, with its JPEG and 8-bit steps left out (they are not how MRI degrades):

1. blur (probability 0.8): an anisotropic Gaussian, sigmas each U[0.2, 0.5 s] HR pixels,
   rotated by U[0, pi); then (probability 0.4) a slice-profile kernel: a box of width
   U[1, s] HR pixels along x or y (partial volume across a thick slice);
2. resolution loss: k-space truncation to the LR size (probability 0.5; Gibbs ringing), with a
   Tukey window of alpha U[0, 0.6] half the time (the apodisation scanners apply), else
   area/bilinear/bicubic resampling (equal odds);
3. Rician noise (probability 0.8): |x + n1 + i n2| with n1, n2 ~ N(0, sigma^2),
   sigma U[0.002, 0.03] of the [0, 1] range;
4. clip to [0, 1].

`hr_noise` (training option) is different: it adds Rician noise to the HR patch itself before
any degradation, so the target is as noisy as a single real scan (the training volumes have
clean, zeroed or averaged backgrounds) and the network learns to carry scan noise through as
interpolation does instead of wiping it out, which costs SSIM against real noisy ground truth.

Every draw comes from the numpy Generator passed in, so runs are reproducible and resumable.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import convolve
from torch.nn import functional as F

from ..errors import MRSuperResError
from ..scans.resample import DEGRADATIONS, downsample, kspace_downsample

TRAINING_DEGRADATIONS = DEGRADATIONS + ("mri", "thick")


def parse_degradations(spec: str) -> list[str]:
    """'bilinear,mri' -> ['bilinear', 'mri']; each training sample picks one at random."""
    names = [s.strip() for s in str(spec).split(",") if s.strip()]
    bad = [n for n in names if n not in TRAINING_DEGRADATIONS]
    if not names or bad:
        raise MRSuperResError(f"unknown degradation {bad or spec!r}: choose from {', '.join(TRAINING_DEGRADATIONS)} "
                              "(comma-separated for a mix)")
    return names


def gaussian_kernel(sigma_x: float, sigma_y: float, theta: float, radius: int) -> np.ndarray:
    ax = np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(ax, ax)
    c, s = np.cos(theta), np.sin(theta)
    u, v = c * xx + s * yy, -s * xx + c * yy
    k = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return k / k.sum()


def slice_profile_kernel(width: float, vertical: bool) -> np.ndarray:
    """A normalised box of fractional `width` pixels (edge taps weighted by their overlap)."""
    half = width / 2.0
    radius = int(np.ceil(half - 0.5))
    taps = np.array([min(1.0, max(0.0, half + 0.5 - abs(t))) for t in range(-radius, radius + 1)])
    taps /= taps.sum()
    return taps[:, None] if vertical else taps[None, :]


def mri_degrade(hr: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
    """One draw of the `mri` chain for a 2D HR patch (H, W multiples of scale)."""
    x = hr.astype(np.float32)
    if rng.random() < 0.8:
        sx, sy = rng.uniform(0.2, 0.5 * scale, size=2)
        k = gaussian_kernel(sx, sy, rng.uniform(0, np.pi), radius=int(np.ceil(3 * max(sx, sy))))
        x = convolve(x, k.astype(np.float32), mode="reflect")
        if rng.random() < 0.4:
            x = convolve(x, slice_profile_kernel(rng.uniform(1, scale), bool(rng.random() < 0.5)).astype(np.float32),
                         mode="reflect")
    if rng.random() < 0.5:
        alpha = rng.uniform(0, 0.6) if rng.random() < 0.5 else 0.0
        lr = kspace_downsample(x[None], scale, window_alpha=alpha)[0]
    else:
        mode = ("area", "bilinear", "bicubic")[rng.integers(3)]
        t = torch.from_numpy(np.ascontiguousarray(x))[None, None]
        kwargs = {} if mode == "area" else {"align_corners": False}
        lr = F.interpolate(t, size=(x.shape[0] // scale, x.shape[1] // scale), mode=mode, **kwargs)[0, 0].numpy()
    if rng.random() < 0.8:
        lr = add_rician(lr, rng.uniform(0.002, 0.03), rng)
    return np.clip(lr, 0, 1).astype(np.float32)


def add_rician(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """|x + n1 + i n2|, n1, n2 ~ N(0, sigma^2): magnitude-image noise, Rician in the background."""
    n1, n2 = rng.normal(0, sigma, size=(2,) + x.shape)
    return np.sqrt((x + n1) ** 2 + n2 ** 2)


def make_lr(hr: np.ndarray, scale: int, methods: list[str], rng: np.random.Generator,
            thick: tuple | None = None) -> np.ndarray:
    """LR for one HR patch: a method drawn from `methods`, then that degradation. `thick`:
    (slice factor range, thickness range) for the through-plane `thick` degradation (scale 1:
    the input is as large as the patch, see slice_profile.training_pair)."""
    method = methods[rng.integers(len(methods))] if len(methods) > 1 else methods[0]
    if method == "thick":
        from ..scans.slice_profile import training_pair
        factors, thickness = thick or ((2.0, 6.0), (0.6, 1.0))
        return training_pair(hr, rng, factors=tuple(factors), thickness=tuple(thickness))
    if method == "mri":
        return mri_degrade(hr, scale, rng)
    return np.clip(downsample(hr[None], scale, method)[0], 0, 1)
