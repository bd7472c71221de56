"""Degradations and baselines follow the documented conventions; metrics match references."""
from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from MRSuperResLib.evaluation.metrics import slice_metrics, summarise, vif
from MRSuperResLib.scans.resample import downsample, lanczos_matrix, upsample


def test_bilinear_x4_is_the_mean_of_the_two_middle_pixels(sample_volume):
    hr = sample_volume[0][:, :, 20:22].transpose(2, 0, 1).copy()
    lr = downsample(hr, 4, "bilinear")
    n, h, w = hr.shape
    blocks = hr.reshape(n, h // 4, 4, w // 4, 4)[:, :, 1:3, :, 1:3]
    assert np.allclose(lr, blocks.mean(axis=(2, 4)), atol=1e-4)


def test_kspace_truncation_is_exact_for_band_limited_slices_on_the_shared_grid():
    h, w, s = 64, 48, 4
    y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    image = 0.5 + 0.2 * np.cos(2 * np.pi * 3 * y / h + 0.4) + 0.1 * np.sin(2 * np.pi * 2 * x / w)
    lr = downsample(image[None].astype(np.float32), s, "kspace")[0]
    centres_y = s * np.arange(h // s) + (s - 1) / 2                 # LR pixel j at HR s j + (s-1)/2
    centres_x = s * np.arange(w // s) + (s - 1) / 2
    yy, xx = np.meshgrid(centres_y, centres_x, indexing="ij")
    expected = 0.5 + 0.2 * np.cos(2 * np.pi * 3 * yy / h + 0.4) + 0.1 * np.sin(2 * np.pi * 2 * xx / w)
    assert np.abs(lr - expected).max() < 1e-5


@pytest.mark.parametrize("method", ["bilinear", "bicubic", "kspace"])
def test_degradations_keep_constants_and_refuse_bad_sizes(method):
    flat = np.full((2, 16, 12), 0.3, np.float32)
    assert np.allclose(downsample(flat, 4, method), 0.3, atol=1e-5)
    with pytest.raises(Exception, match="multiple"):
        downsample(np.zeros((1, 15, 12), np.float32), 4, method)


@pytest.mark.parametrize("method", ["nearest", "bilinear", "bicubic", "lanczos"])
def test_baselines_share_the_grid_rule(method):
    """A linear ramp sampled on the LR grid comes back as the same ramp on the HR grid."""
    s, h, w = 4, 14, 12
    lr_y = np.arange(h)[:, None] * np.ones((1, w))
    lr = (0.05 * lr_y + 0.01 * np.arange(w)[None, :])[None].astype(np.float32)
    hr = upsample(lr, s, method)[0]
    hr_y = (np.arange(h * s) + 0.5) / s - 0.5
    hr_x = (np.arange(w * s) + 0.5) / s - 0.5
    expected = 0.05 * hr_y[:, None] + 0.01 * hr_x[None, :]
    inner = (slice(3 * s, -3 * s), slice(3 * s, -3 * s))          # beyond the widest kernel (3 px)
    err = hr[inner] - expected[inner]
    # nearest is off by <= 3/8 LR pixel; cubic (a = -0.75) and Lanczos-3 do not reproduce ramps
    # exactly but its error is periodic and zero-mean; a grid shift would show as a mean error
    tol = {"nearest": (s - 1) / (2 * s) * (0.05 + 0.01), "bicubic": 0.003, "lanczos": 0.001}.get(method, 1e-4)
    assert np.abs(err).max() <= tol + 1e-6
    assert abs(err.mean()) < 1e-4
    assert np.allclose(lanczos_matrix(7, 3).sum(1), 1, atol=1e-6)


def test_vif_matches_sewar_and_behaves(sample_volume):
    """Independent check: sewar's vifp (a separate implementation of Sheikh & Bovik's code)."""
    from scipy.ndimage import gaussian_filter
    from sewar.full_ref import vifp

    gt = sample_volume[0][:, :, 24] / sample_volume[0].max()
    blurred = gaussian_filter(gt, 1.2)
    noisy = np.clip(gt + np.random.default_rng(0).normal(0, 0.05, gt.shape), 0, 1)
    for distorted in (blurred, noisy):
        ours = vif(gt, distorted)
        theirs = vifp(gt * 255.0, distorted * 255.0, sigma_nsq=2)
        assert abs(ours - theirs) < 1e-6 * max(1, abs(theirs))
        assert 0 < ours < 1
    assert vif(gt, gt) == pytest.approx(1.0)
    assert vif(gt, np.clip(gt * 1.3, 0, 2)) > 1.0                 # contrast gain: VIF above 1
    assert np.isnan(vif(gt[:30, :30], gt[:30, :30]))                # too small for four scales


def test_slice_metrics_against_definitions(sample_volume):
    gt = sample_volume[0][:, :, 24] / sample_volume[0].max()
    pred = np.clip(gt + 0.02 * np.sin(np.arange(gt.size)).reshape(gt.shape), 0, 1)
    m = slice_metrics(gt, pred)
    err = pred - gt
    rmse = np.sqrt(np.mean(err ** 2))
    assert m["rmse"] == pytest.approx(rmse)
    assert m["nrmse"] == pytest.approx(rmse / gt.mean())
    assert m["psnr"] == pytest.approx(10 * np.log10(1 / np.mean(err ** 2)))
    assert m["mae"] == pytest.approx(np.abs(err).mean())
    assert m["ssim"] == pytest.approx(structural_similarity(gt, pred, data_range=1.0))
    s = summarise([m, slice_metrics(gt, gt)])
    assert s["psnr"]["n"] == 1 and s["ssim"]["mean"] == pytest.approx((m["ssim"] + 1) / 2)
