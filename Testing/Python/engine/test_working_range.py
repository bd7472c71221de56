"""The network's working range (engine/working_range): a scan whose range is set by a few bright
voxels is stretched for the network, the bright voxels keep their intensity, and the scans the
models were trained on are passed as they are."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import nearest_model

from MRSuperResLib.engine import working_range
from MRSuperResLib.engine.batches import run_slices
from MRSuperResLib.engine.calibration import make_runner
from MRSuperResLib.models.catalog import load_model
from MRSuperResLib.options import MRI_DEFAULT_MODEL
from MRSuperResLib.scans.resample import downsample, upsample
from MRSuperResLib.scans.volumes import normalise


def psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - b) ** 2))


def with_hot_voxel(data: np.ndarray, brighter: float) -> np.ndarray:
    """The scan with one voxel `brighter` times its maximum (an enhancing vessel, an overshoot)."""
    hot = np.array(data, np.float32)
    hot[tuple(np.array(hot.shape) // 2)] = brighter * hot.max()
    return hot


def test_a_typical_scan_is_passed_as_it_is(sample_volume):
    data, _ = sample_volume
    scan = normalise(data)
    assert working_range.ceiling(scan) == 1.0
    part = scan[:3]
    seen, excess = working_range.split(part, 1.0)
    assert seen is part and excess is None


def test_bright_voxels_set_the_ceiling_from_the_tissue(sample_volume):
    data, _ = sample_volume
    scan = normalise(with_hot_voxel(data, 8))
    tissue = np.percentile(scan[scan > 0], working_range.PERCENTILE)
    c = working_range.ceiling(scan)
    assert c == pytest.approx(tissue / working_range.TISSUE_LEVEL, abs=2 / working_range.BINS / working_range.TISSUE_LEVEL)
    assert c < 0.6
    assert working_range.ceiling(np.zeros((2, 8, 8), np.float32)) == 1.0                    # all air
    lone = np.zeros((2, 64, 64), np.float32)
    lone[:, :40, :40], lone[0, 50, 50] = 0.005, 1.0           # faint noise and one bright voxel
    assert working_range.ceiling(lone) == working_range.MIN_CEILING                        # stretched at most 20x


def test_the_network_sees_the_tissue_stretched_and_the_excess_is_interpolated():
    rng = np.random.default_rng(0)
    stack = (0.05 + 0.05 * rng.random((2, 96, 96))).astype(np.float32)    # tissue in the bottom tenth
    stack[0, 2:6, 2:6] = 1.0                                               # a few bright voxels (0.09 %)
    c = working_range.ceiling(stack)
    assert c < 0.5
    seen = []

    class Recording:
        """The nearest-neighbour network, recording what it is given."""
        def __init__(self, runner):
            self.runner = runner

        def __getattr__(self, name):
            return getattr(self.runner, name)

        def forward(self, x):
            seen.append(np.array(x))
            return self.runner.forward(x)

    runner = Recording(make_runner(nearest_model(4), device="cpu", precision="fp32", engine="torch"))
    out = run_slices(runner, stack)
    np.testing.assert_allclose(np.concatenate(seen), np.minimum(stack, c) / c, atol=1e-6)
    expected = np.clip(c * upsample(np.minimum(stack, c) / c, 4, "nearest")
                       + upsample(stack - np.minimum(stack, c), 4, "bicubic"), 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert out[0, 12:20, 12:20].mean() > 0.95                             # the bright block keeps its intensity
    far = (slice(None), slice(40, None), slice(40, None))
    np.testing.assert_allclose(out[far], upsample(stack, 4, "nearest")[far], atol=1e-5)
    plain = run_slices(runner, stack, ceiling=1.0)                        # the scan as it is
    np.testing.assert_allclose(plain, upsample(stack, 4, "nearest"), atol=1e-6)


@pytest.mark.slow
def test_the_shipped_model_keeps_its_gain_on_a_scan_with_a_bright_voxel(sample_volume):
    """Colin27 with one voxel 8x its maximum: the tissue in the bottom eighth of the range, where
    the x4 model run on the scan as it is loses most of its gain over bicubic."""
    data, _ = sample_volume
    model = load_model(MRI_DEFAULT_MODEL)[0]
    runner = make_runner(model, device="cpu", precision="fp32", engine="torch")
    gains = {}
    for name, volume in (("clean", data), ("hot", with_hot_voxel(data, 8))):
        hr = np.moveaxis(normalise(volume)[4:148, 20:164, 14:34:4], 2, 0)
        lr = np.clip(downsample(hr, 4, "bicubic"), 0, 1)
        cubic = psnr(np.clip(upsample(lr, 4, "bicubic"), 0, 1), hr)
        for ceiling in (None, 1.0):
            out = run_slices(runner, lr, ceiling=ceiling)
            gains[name, ceiling] = psnr(out, hr) - cubic
    assert gains["clean", None] == gains["clean", 1.0]                   # untouched
    assert gains["hot", 1.0] < gains["clean", None] - 0.4                # the failure this fixes
    assert gains["hot", None] > gains["hot", 1.0] + 0.8                  # most of it back (+0.73 -> +2.17 dB; clean +2.60)
    assert gains["hot", None] > gains["clean", None] - 0.6


def test_enhance_says_when_the_scan_was_stretched_and_keeps_the_bright_voxel(tmp_path, capsys, save_tiny,
                                                                             sample_volume):
    import nibabel as nib

    from MRSuperResLib.cli import main

    data, affine = sample_volume
    scan = with_hot_voxel(data[:, :, 20:24], 8)
    nib.save(nib.Nifti1Image(scan, affine), str(tmp_path / "hot.nii.gz"))
    out = tmp_path / "sr.nii.gz"
    assert main(["enhance", str(tmp_path / "hot.nii.gz"), "-o", str(out), "--model", str(save_tiny(nearest_model(4))),
                 "--axis", "2", "--precision", "fp32", "--engine", "torch", "--consistency", "none"]) == 0
    said = capsys.readouterr().out
    assert "the network saw the scan up to" in said and "brighter voxels were interpolated" in said
    result = np.asarray(nib.load(str(out)).dataobj)
    assert result.max() > 0.9 * scan.max()                                  # the bright voxel is still there (bicubic)
    np.testing.assert_allclose(result[::4, ::4][:40, :40, 0], scan[:40, :40, 0], rtol=1e-4, atol=1e-3)


def test_training_sees_a_bright_voxel_scan_as_inference_does(tmp_path, sample_volume):
    import nibabel as nib

    from MRSuperResLib.training.data import load_normalised

    data, affine = sample_volume
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "clean.nii.gz"))
    nib.save(nib.Nifti1Image(with_hot_voxel(data, 8), affine), str(tmp_path / "hot.nii.gz"))
    clean, _ = load_normalised(str(tmp_path / "clean.nii.gz"))
    np.testing.assert_array_equal(clean, normalise(data))                   # a typical scan: min-max only
    hot, _ = load_normalised(str(tmp_path / "hot.nii.gz"))
    assert hot.max() == 1.0
    top = np.percentile(hot[hot > 0], working_range.PERCENTILE)
    assert top == pytest.approx(working_range.TISSUE_LEVEL, abs=0.01)        # the tissue stretched to the level


def test_through_the_slices_both_orientations_share_the_scans_ceiling(monkeypatch):
    """A thick scan whose range is set by one bright spot: the network (identity here) sees the
    tissue stretched by the one ceiling of the scan in both orientations, and the output is
    the cubic interpolation exactly, the bright spot included."""
    from conftest import tiny_model

    from MRSuperResLib.engine.slices import SliceEngine
    from MRSuperResLib.pipeline.enhance import enhance_volume
    from MRSuperResLib.scans import slice_profile
    from MRSuperResLib.scans.volumes import Volume

    rng = np.random.default_rng(1)
    thick = (100 + 50 * rng.random((30, 28, 8))).astype(np.float32)        # tissue
    thick[14, 14, 4] = 4000.0                                              # one bright voxel
    seen = []

    def identity(self, x):
        seen.append(float(np.percentile(x, 50)))
        return np.clip(x, 0, 1)

    monkeypatch.setattr(SliceEngine, "forward", identity)
    out, facts = enhance_volume(Volume(thick, np.diag([1.0, 1.0, 5.0, 1.0])), tiny_model(1), direction="through-plane",
                                device="cpu", precision="fp32", consistency="none")
    c = facts["network_ceiling"]
    scan = normalise(thick)
    assert c == working_range.ceiling(scan) < 0.2
    median = float(np.median(scan))
    stacks = [m for m in seen if m > 0]
    assert len(stacks) >= 2 and all(abs(m - median / c) < 0.1 / c for m in stacks)   # stretched by 1 / c
    expected = np.clip(slice_profile.interpolate(scan, 2, 5.0), 0, 1) * np.float32(4000.0 - thick.min()) + thick.min()
    np.testing.assert_allclose(out.data, expected, rtol=1e-4, atol=1e-2)
    assert out.data.max() == pytest.approx(expected.max(), rel=1e-5)
