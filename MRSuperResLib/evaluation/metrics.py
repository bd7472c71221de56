"""Fidelity metrics of one 2D slice against its ground truth, both on [0, 1] intensities.

- `ssim`, `psnr`: scikit-image, data_range = 1 (SSIM: 7x7 uniform window, K1 0.01, K2 0.03).
- `nrmse`: RMSE divided by the mean of the ground truth, as Rashid et al. state (scikit-image's
  `normalized_root_mse(normalization="mean")`). Rashid et al.'s 0.04 is close to what `rmse` gives
  on [0, 1] images, so both are reported: `rmse` is the plain root-mean-square error.
- `mae`: mean absolute error.
- `vif`: pixel-domain visual information fidelity (Sheikh & Bovik 2006, `vifp_mscale`): four
  scales with Gaussian windows of N = 2^(5 - scale) + 1 taps and sigma N / 5, 'valid'
  filtering, decimation by 2 between scales, HVS noise variance sigma_n^2 = 2 on intensities
  scaled to [0, 255] (the scale the reference code was written for). Slices too small for the
  four scales (under about 48 pixels a side) get NaN.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate1d
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity

METRICS = ("ssim", "psnr", "nrmse", "rmse", "mae", "vif")
VIF_NOISE_VARIANCE = 2.0
VIF_INTENSITY_SCALE = 255.0


def _gaussian_window(n: int) -> np.ndarray:
    sd = n / 5.0
    x = np.arange(n) - (n - 1) / 2.0
    g = np.exp(-(x * x) / (2 * sd * sd))
    return g / g.sum()


def _filter_valid(image: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable 2D correlation keeping only fully covered pixels (MATLAB filter2 'valid')."""
    out = correlate1d(correlate1d(image, taps, axis=0, mode="constant"), taps, axis=1, mode="constant")
    r = len(taps) // 2
    return out[r: image.shape[0] - r, r: image.shape[1] - r]


def vif(reference: np.ndarray, distorted: np.ndarray, sigma_nsq: float = VIF_NOISE_VARIANCE,
        intensity_scale: float = VIF_INTENSITY_SCALE) -> float:
    """Pixel-domain VIF of `distorted` against `reference` (1 = as informative as reference)."""
    ref = np.asarray(reference, dtype=np.float64) * intensity_scale
    dist = np.asarray(distorted, dtype=np.float64) * intensity_scale
    eps = 1e-10
    num = den = 0.0
    for scale in range(1, 5):
        taps = _gaussian_window(2 ** (4 - scale + 1) + 1)
        if scale > 1:
            ref = _filter_valid(ref, taps)[::2, ::2]
            dist = _filter_valid(dist, taps)[::2, ::2]
        if min(ref.shape) < len(taps):
            return float("nan")
        mu1, mu2 = _filter_valid(ref, taps), _filter_valid(dist, taps)
        sigma1_sq = np.maximum(_filter_valid(ref * ref, taps) - mu1 * mu1, 0)
        sigma2_sq = np.maximum(_filter_valid(dist * dist, taps) - mu2 * mu2, 0)
        sigma12 = _filter_valid(ref * dist, taps) - mu1 * mu2
        g = sigma12 / (sigma1_sq + eps)
        sv_sq = sigma2_sq - g * sigma12
        flat_ref = sigma1_sq < eps
        g[flat_ref] = 0
        sv_sq[flat_ref] = sigma2_sq[flat_ref]
        sigma1_sq[flat_ref] = 0
        flat_dist = sigma2_sq < eps
        g[flat_dist] = 0
        sv_sq[flat_dist] = 0
        negative = g < 0
        sv_sq[negative] = sigma2_sq[negative]
        g[negative] = 0
        sv_sq = np.maximum(sv_sq, eps)
        num += np.sum(np.log10(1 + g * g * sigma1_sq / (sv_sq + sigma_nsq)))
        den += np.sum(np.log10(1 + sigma1_sq / sigma_nsq))
    return float(num / den) if den > 0 else float("nan")


def slice_metrics(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """All metrics for one slice; both arrays float in [0, 1], same shape."""
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    err = pred - gt
    mse = float(np.mean(err * err))
    with np.errstate(divide="ignore"):
        psnr = (peak_signal_noise_ratio(gt, pred, data_range=1.0) if mse > 0
                else float("inf") if mse == 0 else float("nan"))
    mean_gt = float(gt.mean())
    return {
        "ssim": float(structural_similarity(gt, pred, data_range=1.0)),
        "psnr": float(psnr),
        "nrmse": float(normalized_root_mse(gt, pred, normalization="mean")) if mean_gt > 0 else float("nan"),
        "rmse": float(np.sqrt(mse)),
        "mae": float(np.mean(np.abs(err))),
        "vif": vif(gt, pred),
    }


def summarise(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and (population) std of each metric over slices, ignoring NaN and inf."""
    out = {}
    for name in METRICS:
        values = np.array([r[name] for r in rows], dtype=np.float64)
        values = values[np.isfinite(values)]
        out[name] = ({"mean": float(values.mean()), "std": float(values.std()), "n": int(values.size)}
                     if values.size else {"mean": None, "std": None, "n": 0})
    return out


def summarise_by_method(rows: list[dict], methods) -> dict[str, dict[str, dict[str, float]]]:
    """{method: summarise(its rows)} over rows tagged with "method" (any number of volumes)."""
    return {m: summarise([r for r in rows if r["method"] == m]) for m in methods}


def score_slices(gt: np.ndarray, outputs: dict[str, np.ndarray], slice_ids=None) -> tuple[list[dict], dict]:
    """The one scoring of predictions against ground truth, shared by evaluate, the Slicer
    comparison, training's validation and the acceptance scripts so their numbers agree.
    `gt` (N, H, W) in [0, 1]; `outputs` {method: (N, H, W) prediction, already clipped and
    cropped}. Returns (rows, summary): rows {"slice": slice_ids[i] (default i), "method",
    metric: value}, slice-major then methods in dict order; summary {method: `summarise`}."""
    ids = list(range(len(gt))) if slice_ids is None else [int(s) if isinstance(s, np.integer) else s
                                                           for s in slice_ids]
    if len(ids) != len(gt):
        raise ValueError(f"{len(ids)} slice ids for {len(gt)} slices")
    for m, out in outputs.items():
        if np.shape(out) != np.shape(gt):
            raise ValueError(f"output '{m}' has shape {np.shape(out)}, the ground truth {np.shape(gt)}")
    rows = [{"slice": ids[i], "method": m, **slice_metrics(gt[i], out[i])}
            for i in range(len(gt)) for m, out in outputs.items()]
    return rows, summarise_by_method(rows, outputs)
