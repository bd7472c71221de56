"""2D resampling of slice stacks (N, H, W): low-resolution simulation and interpolation baselines.

Every method uses the grid rule of `geometry`: pixel centres aligned (`align_corners=False`),
HR pixel i' at LR continuous index (i' + 0.5) / s - 0.5, borders replicated.

Degradations (HR -> LR, H and W must be multiples of s):
- `bilinear` (Rashid et al.): torch `interpolate(mode="bilinear", align_corners=False,
  antialias=False)`, the same numbers as OpenCV's `resize(INTER_LINEAR)`. Without antialiasing
  an x4 LR pixel is the mean of the two middle HR pixels of its 4x4 block in each direction
  (HR positions 4j+1 and 4j+2).
- `bicubic` (the two-stage ESRGAN thesis, MATLAB/PIL-style): torch bicubic with `antialias=True`, i.e. the cubic
  kernel (a = -0.5) stretched by s so that it low-pass filters before decimation.
- `kspace` (how MRI loses resolution): the centred h x w block of the 2D Fourier transform is
  kept and transformed back (a truncated acquisition: Gibbs ringing, no aliasing). A sub-pixel
  phase shift first places LR pixel j at HR position s j + (s - 1) / 2, the same grid as above.
  Optionally the kept block is tapered by a Tukey window (`kspace_downsample(window_alpha=)`).

Baselines (LR -> HR): `nearest`, `bilinear`, `bicubic` (torch, a = -0.75 as OpenCV) and
`lanczos` (Lanczos-3, separable, weights normalised to 1, borders replicated).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import MRSuperResError
from ..options import BASELINES, DEGRADATIONS  # noqa: F401



def check_scale(scale) -> int:
    if int(scale) != scale or scale < 2:
        raise MRSuperResError(f"--scale must be an integer of at least 2, not {scale}")
    return int(scale)


def _as_batch(stack: np.ndarray) -> torch.Tensor:
    stack = np.asarray(stack, dtype=np.float32)
    if stack.ndim != 3:
        raise ValueError(f"expected a stack of 2D slices (N, H, W), got shape {stack.shape}")
    return torch.from_numpy(np.ascontiguousarray(stack))[:, None]


def downsample(stack: np.ndarray, scale: int, method: str = "bilinear") -> np.ndarray:
    """Simulate a low-resolution acquisition of every slice: (N, H, W) -> (N, H/s, W/s)."""
    n, h, w = stack.shape
    if h % scale or w % scale:
        raise MRSuperResError(f"slice size {h}x{w} is not a multiple of the scale {scale}")
    if method == "kspace":
        return kspace_downsample(stack, scale)
    if method not in DEGRADATIONS:
        raise MRSuperResError(f"unknown degradation '{method}' (choose from {', '.join(DEGRADATIONS)})")
    x = _as_batch(stack)
    with torch.no_grad():
        y = F.interpolate(x, size=(h // scale, w // scale), mode=method, align_corners=False,
                          antialias=(method == "bicubic"))
    return y[:, 0].numpy()


def tukey(n: int, alpha: float) -> np.ndarray:
    """Tukey (tapered cosine) window of n points; alpha <= 0 is flat (no taper)."""
    if alpha <= 0:
        return np.ones(n)
    x = np.linspace(0, 1, n)
    w = np.ones(n)
    edge = alpha / 2
    lo, hi = x < edge, x > 1 - edge
    w[lo] = 0.5 * (1 + np.cos(np.pi * (x[lo] / edge - 1)))
    w[hi] = 0.5 * (1 + np.cos(np.pi * ((x[hi] - 1) / edge + 1)))
    return w


def kspace_downsample(stack: np.ndarray, scale: int, window_alpha: float = 0.0) -> np.ndarray:
    """Keep the central 1/s of k-space in each in-plane direction (see module docstring).
    `window_alpha` > 0 tapers the kept frequencies with a Tukey window of that alpha (the
    apodisation scanners apply, used by the training `mri` chain); 0 is plain truncation."""
    n, h, w = stack.shape
    lh, lw = h // scale, w // scale
    shift = (scale - 1) / 2.0
    spectrum = np.fft.fft2(np.asarray(stack, dtype=np.float64), axes=(1, 2))
    ky = np.fft.fftfreq(h)[:, None]
    kx = np.fft.fftfreq(w)[None, :]
    spectrum *= np.exp(2j * np.pi * shift * (ky + kx))       # x(n) -> x(n + shift)
    spectrum = np.fft.fftshift(spectrum, axes=(1, 2))
    y0, x0 = h // 2 - lh // 2, w // 2 - lw // 2
    kept = spectrum[:, y0:y0 + lh, x0:x0 + lw]
    if window_alpha > 0:
        kept = kept * np.outer(tukey(lh, window_alpha), tukey(lw, window_alpha))
    cropped = np.fft.ifftshift(kept, axes=(1, 2))
    return (np.fft.ifft2(cropped, axes=(1, 2)).real / (scale * scale)).astype(np.float32)


def lanczos_matrix(n_in: int, scale: int, a: int = 3) -> np.ndarray:
    """(n_in * s, n_in) interpolation matrix for Lanczos-a upsampling on the shared grid."""
    x = (np.arange(n_in * scale) + 0.5) / scale - 0.5
    taps = np.floor(x)[:, None] + np.arange(-a + 1, a + 1)[None, :]
    weights = np.sinc(x[:, None] - taps) * np.sinc((x[:, None] - taps) / a)
    weights /= weights.sum(1, keepdims=True)
    matrix = np.zeros((len(x), n_in))
    rows = np.repeat(np.arange(len(x)), taps.shape[1])
    np.add.at(matrix, (rows, np.clip(taps, 0, n_in - 1).astype(int).ravel()), weights.ravel())
    return matrix.astype(np.float32)


def upsample(stack: np.ndarray, scale: int, method: str = "bicubic") -> np.ndarray:
    """Interpolate every slice onto the HR grid: (N, h, w) -> (N, h s, w s)."""
    n, h, w = stack.shape
    if method == "lanczos":
        my, mx = lanczos_matrix(h, scale), lanczos_matrix(w, scale)
        return np.einsum("yh,nhw,xw->nyx", my, np.asarray(stack, np.float32), mx, optimize=True)
    if method not in BASELINES:
        raise MRSuperResError(f"unknown interpolation '{method}' (choose from {', '.join(BASELINES)})")
    x = _as_batch(stack)
    kwargs = {} if method == "nearest" else {"align_corners": False}
    with torch.no_grad():
        y = F.interpolate(x, size=(h * scale, w * scale), mode=method, **kwargs)
    return y[:, 0].numpy()
