"""The HR grid rule, the slice axis, and volume I/O geometry (NIfTI and NRRD)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import SAMPLE, nearest_model, oblique_affine, write_nifti
from MRSuperResLib.scans import geometry
from MRSuperResLib.errors import MRSuperResError
from MRSuperResLib.pipeline.enhance import enhance_volume
from MRSuperResLib.scans.degrade import degrade_volume
from MRSuperResLib.scans.volumes import Volume, read_volume, write_volume


def world(affine, ijk):
    return affine[:3, :3] @ np.asarray(ijk, float) + affine[:3, 3]


def blob(shape, centre, sigma=1.5):
    grid = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    r2 = sum((g - c) ** 2 for g, c in zip(grid, centre))
    return np.exp(-r2 / (2 * sigma ** 2)).astype(np.float32)


def centroid_world(volume):
    d = volume.data.astype(np.float64) - float(volume.data.min())   # feature above background
    grid = np.meshgrid(*(np.arange(n) for n in d.shape), indexing="ij")
    ijk = [float((g * d).sum() / d.sum()) for g in grid]
    return world(volume.affine, ijk)


@pytest.mark.parametrize("scale", [4, 8])
def test_phantom_feature_keeps_its_physical_position(scale):
    """An off-centre blob in an oblique, anisotropic LR volume lands at the same RAS point."""
    lr_affine = oblique_affine()
    centre = (9.3, 12.6, 4.0)
    lr = Volume(blob((24, 28, 9), centre) * 700 + 100, lr_affine)     # units: not [0, 1]
    hr, facts = enhance_volume(lr, nearest_model(scale), axis="auto", device="cpu", precision="fp32")
    assert facts["axis"] == 2                                         # largest spacing
    assert hr.data.shape == (24 * scale, 28 * scale, 9)
    assert np.allclose(hr.spacing, [0.9 / scale, 1.1 / scale, 3.0])
    assert np.allclose(hr.affine[:3, :3] / hr.spacing, lr_affine[:3, :3] / lr.spacing)   # same directions
    # the exact rule: HR voxel i' sits at LR continuous index (i' + 0.5) / s - 0.5
    for hr_index in [(0, 0, 0), (5, 17, 3), (24 * scale - 1, 28 * scale - 1, 8)]:
        lr_index = [(i + 0.5) / scale - 0.5 for i in hr_index[:2]] + [hr_index[2]]
        assert np.allclose(world(hr.affine, hr_index), world(lr_affine, lr_index), atol=1e-9)
    expected = world(lr_affine, centre)
    assert np.linalg.norm(centroid_world(lr) - expected) < 1e-3           # blob centre, background removed
    assert np.linalg.norm(centroid_world(hr) - centroid_world(lr)) < 1e-3  # offset included
    # the outer edges of the grids (voxel index -0.5 and n - 0.5) coincide
    for corner in [(-0.5, -0.5, 0), (24 - 0.5, 28 - 0.5, 0)]:
        hr_corner = [(c + 0.5) * scale - 0.5 for c in corner[:2]] + [0]
        assert np.allclose(world(lr_affine, corner), world(hr.affine, hr_corner), atol=1e-9)
    # intensity units kept: nearest upsampling must reproduce the input values exactly
    assert np.allclose(hr.data[::scale, ::scale], lr.data, atol=1e-3)


def test_degrade_then_enhance_lands_on_the_hr_grid(sample_volume):
    data, affine = sample_volume
    hr = Volume(data, affine)
    for axis in (0, 1, 2):
        lr = degrade_volume(hr, 4, "bilinear", axis)
        out, facts = enhance_volume(lr, nearest_model(4), axis=axis, device="cpu", precision="fp32")
        assert np.abs(out.affine - affine).max() < 1e-9
        assert out.data.shape == data.shape
    lr = degrade_volume(hr, 4, "kspace", 2)
    assert geometry.choose_axis("auto", lr.affine) == 2                  # 4 x 4 x 1 mm: the odd axis


def test_choose_axis():
    assert geometry.choose_axis("auto", np.diag([1, 1, 1, 1.0])) == 2
    assert geometry.choose_axis("auto", np.diag([0.5, 0.5, 5, 1.0])) == 2
    assert geometry.choose_axis("auto", np.diag([4, 1, 1, 1.0])) == 0
    assert geometry.choose_axis("auto", np.diag([1, 4, 4, 1.0])) == 0
    assert geometry.choose_axis("auto", np.diag([0.9, 1.0, 1.2, 1.0])) == 2
    # isotropic but stored sagittal-first: axial is the voxel axis along RAS z
    permuted = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])
    assert geometry.choose_axis("auto", permuted) == 0
    assert geometry.choose_axis("1", permuted) == 1
    with pytest.raises(MRSuperResError, match="axis"):
        geometry.choose_axis("3", permuted)


def test_nifti_and_nrrd_keep_the_same_geometry_and_values(tmp_path):
    volume = read_volume(SAMPLE)
    affine = oblique_affine((1.0, 1.2, 2.5))
    v = Volume(volume.data[:40, :30, :10], affine)
    for name in ("a.nii.gz", "a.nii", "a.nrrd"):
        write_volume(v, tmp_path / name)
        back = read_volume(tmp_path / name)
        assert np.allclose(back.affine, affine, atol=1e-5), name
        assert np.array_equal(back.data, v.data), name
    import nrrd
    _, header = nrrd.read(str(tmp_path / "a.nrrd"))
    assert header["space"] == "left-posterior-superior"
    assert np.allclose(header["space origin"], [-affine[0, 3], -affine[1, 3], affine[2, 3]])
    # uint8 input keeps its values (scaling applied by nibabel) and the file type is refused otherwise
    assert read_volume(SAMPLE).data.dtype == np.float32
    assert leftovers(tmp_path) == []


def leftovers(folder):
    return [p.name for p in folder.iterdir() if ".partial" in p.name]


def test_write_is_atomic_and_refuses_non_finite(tmp_path):
    v = Volume(np.ones((8, 8, 8), np.float32), np.eye(4))
    v.data[0, 0, 0] = np.nan
    with pytest.raises(MRSuperResError, match="NaN"):
        write_volume(v, tmp_path / "x.nii.gz")
    assert list(tmp_path.iterdir()) == []
    write_nifti(tmp_path / "y.nii.gz", np.ones((4, 4, 4)))
    with pytest.raises(MRSuperResError, match="folder does not exist"):
        write_volume(Volume(np.ones((4, 4, 4), np.float32), np.eye(4)), tmp_path / "no" / "x.nii.gz")


def test_real_anisotropic_lr_volume_lands_on_the_expected_grid(tmp_path, save_tiny, default_model_path):
    """A real oblique 4 x 4 x 5 mm b0 volume: exact HR affine, units and anatomy kept."""
    import nibabel as nib

    from conftest import ROOT
    from MRSuperResLib.cli import main
    from MRSuperResLib.scans.resample import upsample
    src = ROOT / "Testing" / "Data" / "aniso_vox.nii.gz"
    lr_img = nib.load(str(src))
    a, lr = lr_img.affine, lr_img.get_fdata()
    out = tmp_path / "sr.nii.gz"
    assert main(["enhance", str(src), "-o", str(out), "--model", str(save_tiny(nearest_model(4))),
                 "--precision", "fp32"]) == 0
    sr_img = nib.load(str(out))
    assert sr_img.shape == (232, 232, 24)
    rng = np.random.default_rng(1)
    points = np.concatenate([[[0, 0, 0], [231, 231, 23], [231, 0, 11]], rng.integers(0, 232, (20, 3)) % [232, 232, 24]])
    for p in points:
        expected = a[:3, :3] @ [(p[0] + 0.5) / 4 - 0.5, (p[1] + 0.5) / 4 - 0.5, p[2]] + a[:3, 3]
        assert np.abs(sr_img.affine[:3, :3] @ p + sr_img.affine[:3, 3] - expected).max() < 1e-3
    sr = sr_img.get_fdata()
    assert np.abs(sr[::4, ::4] - lr).max() < 0.05                  # intensity units: int16 values kept
    # the real default model on two slices: the anatomy is the input's
    crop = tmp_path / "two.nii.gz"
    nib.save(nib.Nifti1Image(lr[:, :, 11:13].astype(np.int16), a), str(crop))
    assert main(["enhance", str(crop), "-o", str(tmp_path / "sr2.nii.gz"), "--model", str(default_model_path)]) == 0
    sr2 = nib.load(str(tmp_path / "sr2.nii.gz")).get_fdata()
    bicubic = np.moveaxis(upsample(np.moveaxis(lr[:, :, 11:13], 2, 0).astype(np.float32), 4, "bicubic"), 0, 2)
    assert sr2.min() >= lr[:, :, 11:13].min() - 1e-3 and sr2.max() <= lr[:, :, 11:13].max() + 1e-3
    assert np.corrcoef(sr2.ravel(), bicubic.ravel())[0, 1] > 0.9


def test_nifti_qform_and_sform_move_with_the_grid_and_keep_their_codes(tmp_path):
    import nibabel as nib

    from MRSuperResLib.cli import main
    q = oblique_affine((2.0, 2.0, 4.0), origin=(8.0, -3.0, 5.0))
    s = q.copy()
    s[0, 3] = 5.0                                                     # sform 3 mm away from qform
    data = np.random.default_rng(0).random((12, 10, 3)).astype(np.float32)
    img = nib.Nifti1Image(data, s)
    img.set_qform(q, code=1)
    img.set_sform(s, code=2)
    nib.save(img, str(tmp_path / "qs.nii.gz"))
    model = tmp_path / "near.safetensors"
    from MRSuperResLib.models.weights import save_model
    save_model(nearest_model(4), model, {})
    assert main(["enhance", str(tmp_path / "qs.nii.gz"), "-o", str(tmp_path / "o.nii.gz"), "--model", str(model)]) == 0
    out = nib.load(str(tmp_path / "o.nii.gz"))
    assert int(out.header["qform_code"]) == 1 and int(out.header["sform_code"]) == 2
    assert np.allclose(out.header.get_qform(), geometry.resample_affine(q, 2, 4), atol=1e-4)
    assert np.allclose(out.header.get_sform(), geometry.resample_affine(s, 2, 4), atol=1e-4)
    # no orientation stored at all: RAS = pixdim * index (nifti1_io method 1), not nibabel's flipped guess
    bare = nib.Nifti1Image(data, np.diag([2.0, 3.0, 4.0, 1.0]))
    bare.set_qform(None, code=0)
    bare.set_sform(None, code=0)
    nib.save(bare, str(tmp_path / "bare.nii.gz"))
    assert np.allclose(read_volume(tmp_path / "bare.nii.gz").affine, np.diag([2.0, 3.0, 4.0, 1.0]))


def test_nrrd_without_space_is_lps_and_degenerate_geometry_is_refused(tmp_path):
    import nrrd

    data = np.random.default_rng(0).random((12, 10, 3)).astype(np.float32)
    nrrd.write(str(tmp_path / "sp.nrrd"), data, {"spacings": [1.0, 1.5, 3.0]}, index_order="F")
    assert np.allclose(read_volume(tmp_path / "sp.nrrd").affine, np.diag([-1.0, -1.5, 3.0, 1.0]))
    nrrd.write(str(tmp_path / "unknown.nrrd"), data, {"kinds": ["???"] * 3}, index_order="F")
    assert read_volume(tmp_path / "unknown.nrrd").data.shape == (12, 10, 3)
    nrrd.write(str(tmp_path / "nan.nrrd"), data, {"spacings": [np.nan] * 3}, index_order="F")
    with pytest.raises(MRSuperResError, match="NaN or infinite"):
        read_volume(tmp_path / "nan.nrrd")
    nrrd.write(str(tmp_path / "zero.nrrd"), data, {"space": "left-posterior-superior",
                                                  "space directions": np.diag([1.0, 0.0, 1.0])}, index_order="F")
    with pytest.raises(MRSuperResError, match="degenerate"):
        read_volume(tmp_path / "zero.nrrd")


def test_single_slice_volumes_use_their_thin_axis():
    assert geometry.choose_axis("auto", np.eye(4), (64, 1, 64)) == 1
    out, facts = enhance_volume(Volume(np.random.rand(16, 1, 12).astype(np.float32), np.eye(4)), nearest_model(4))
    assert facts["axis"] == 1 and out.data.shape == (64, 1, 48)
