"""Maps for thick-slice scans: the consistency map is the output re-acquired with the scan's slice
profile minus the scan, the uncertainty map the spread of the two orientations; both on the
output's grid, written by `enhance --maps`, and scored against the error by `evaluate`."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import SAMPLE, oblique_affine, tiny_model, write_nifti

from MRSuperResLib.cli import main
from MRSuperResLib.engine.slices import SliceEngine
from MRSuperResLib.pipeline.enhance import enhance_volume
from MRSuperResLib.scans import geometry, slice_profile
from MRSuperResLib.scans.volumes import Volume, read_volume


def phantom(profile="rect") -> tuple[Volume, np.ndarray]:
    affine = oblique_affine((1.0, 1.0, 1.0))
    hr = np.zeros((24, 20, 40), np.float32)
    hr[:, :, 22] = 1.0
    hr[5:9, 3:7, :] += 0.5
    thick = Volume(slice_profile.simulate_thick(hr, 2, 5.0, profile=profile),
                   geometry.resample_affine(affine, 2, 1 / 5, along=(2,)))
    return thick, hr


@pytest.mark.parametrize("profile", ["rect", "gaussian"])
def test_the_consistency_map_re_acquires_the_output_with_the_scans_profile(monkeypatch, profile):
    """With the network replaced by a known function, both maps are what their definitions say:
    consistency = (output re-acquired with the profile) - scan, each fine slice carrying its thick
    slice's value; uncertainty = |first orientation - second| / 2."""
    thick, _ = phantom(profile)

    def bend(self, x):                      # the first orientation's planes are 24 deep, the second's 20
        return np.clip(x, 0, 1) + (np.float32(0.1) if x.shape[-1] == 20 else np.float32(0.0))

    monkeypatch.setattr(SliceEngine, "forward", bend)
    out, facts = enhance_volume(thick, tiny_model(1), direction="through-plane", device="cpu", precision="fp32",
                                maps=True, profile=profile)
    assert set(out.maps) == {"consistency", "uncertainty"}
    lo, hi = float(thick.data.min()), float(thick.data.max())
    for m in out.maps.values():
        assert m.data.shape == out.data.shape and np.allclose(m.affine, out.affine)
    assert np.allclose(out.maps["uncertainty"].data, 0.05 * (hi - lo), atol=1e-5)
    out01 = (out.data - lo) / (hi - lo)
    reacquired = slice_profile.simulate_thick(out01, 2, 5.0, profile=profile)
    expected = np.repeat((reacquired - (thick.data - lo) / (hi - lo)) * (hi - lo), 5, axis=2)
    assert np.allclose(out.maps["consistency"].data, expected, atol=1e-4)
    assert profile in facts["reacquired_with"] and facts["uncertainty"]["mean"] == pytest.approx(0.05, abs=1e-4)
    assert facts["data_consistency"]["network"]["rms"] > 0


def test_a_header_thickness_with_gaps_is_the_one_re_acquired(monkeypatch):
    """NRRD slices 3 mm thick every 5 mm: the consistency map uses the 3 mm profile (an identity
    network reproduces a 3 mm-thick scan better with it than with contiguous 5 mm slices)."""
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    rng = np.random.default_rng(0)
    hr = np.cumsum(rng.random((16, 16, 60)).astype(np.float32) - 0.5, axis=2)
    data = slice_profile.simulate_thick(hr, 2, 5.0, thickness=3.0)
    thick = Volume(data, geometry.resample_affine(affine, 2, 1 / 5, along=(2,)),
                   {"thicknesses": [float("nan"), float("nan"), 3.0]})
    monkeypatch.setattr(SliceEngine, "forward", lambda self, x: np.clip(x, 0, 1))
    _, with_header = enhance_volume(thick, tiny_model(1), direction="through-plane", device="cpu",
                                    precision="fp32", maps=True)
    assert "3 mm thick (header)" in with_header["reacquired_with"]
    thick.meta = {}
    _, without = enhance_volume(thick, tiny_model(1), direction="through-plane", device="cpu", precision="fp32",
                                maps=True)
    assert "5 mm thick: the spacing" in without["reacquired_with"]


def test_enhance_maps_on_a_thick_scan_writes_both_beside_the_output(tmp_path, save_tiny, capsys):
    thick, _ = phantom()
    src = write_nifti(tmp_path / "thick.nii.gz", thick.data, thick.affine)
    out = tmp_path / "fine.nii.gz"
    model = save_tiny(tiny_model(1), "x1")
    assert main(["enhance", str(src), "-o", str(out), "--model", str(model), "--maps", "--profile", "rect",
                 "--precision", "fp32"]) == 0
    text = capsys.readouterr().out
    assert "re-acquired (rect profile, 5 mm thick" in text and "spread of the two orientations" in text
    fine = nib.load(str(out))
    for name in ("consistency", "uncertainty"):
        m = nib.load(str(tmp_path / f"fine_{name}.nii.gz"))
        assert m.shape == fine.shape and np.allclose(m.affine, fine.affine, atol=1e-6)
    assert main(["enhance", str(src), "-o", str(tmp_path / "x.nii.gz"), "--model", str(model),
                 "--self-ensemble"]) == 2
    assert "in-plane super-resolution only" in capsys.readouterr().err


@pytest.mark.slow
def test_with_the_shipped_model_the_maps_rank_the_error_on_real_mri(tmp_path, capsys):
    """Real MRI (the bundled Colin27 slab) in 5 mm rectangular slices, restored by the shipped
    through-plane model: both maps correlate positively with |output - truth| over tissue patches."""
    fine = read_volume(SAMPLE)
    gt = write_nifti(tmp_path / "gt.nii.gz", fine.data[:, :, :40], fine.affine)
    out = tmp_path / "eval"
    assert main(["evaluate", str(gt), "--degrade", "thick", "--thickness", "5", "--profile", "rect",
                 "--model", "mri-thick-x1", "--out", str(out)]) == 0
    assert "consistency map vs |SR - GT|" in capsys.readouterr().out
    scores = json.loads((out / "metrics.json").read_text())["maps"]
    assert scores["consistency"]["spearman"] > 0.2 and scores["uncertainty"]["spearman"] > 0.2
    assert scores["consistency"]["top_caught"] > 2 * scores["consistency"]["chance"]


def test_a_fractional_factor_from_float32_spacings_lands_back_on_the_same_grid(monkeypatch, tmp_path):
    """sdcflows-epi's 2.00000009 mm voxels in 5 mm slices (2.4999998x): the whole slices, the
    simulated thick scan and its through-plane result all agree on 60 fine slices, so evaluate
    scores the model (and its maps) on the ground truth's own grid."""
    from MRSuperResLib.evaluation.thick import evaluate_thick
    from MRSuperResLib.scans.degrade import thick_factor, whole_slices

    affine = np.diag([2.00000005, 2.00000002, 2.00000009, 1.0])
    volume = Volume(np.random.default_rng(0).random((16, 16, 60)).astype(np.float32), affine)
    factor = thick_factor(volume, 2, 5.0)
    assert factor != 2.5 and whole_slices(volume, 2, factor).data.shape[2] == 60
    monkeypatch.setattr(SliceEngine, "forward", lambda self, x: np.clip(x, 0, 1))
    gt = str(write_nifti(tmp_path / "v.nii.gz", volume.data, volume.affine))
    result = evaluate_thick([gt], tiny_model(1), thickness=5.0, axis=2, device="cpu", precision="fp32")
    assert result["slices_per_volume"][0]["voxels_scored"] == 60 and set(result["maps"]) == {"consistency",
                                                                                              "uncertainty"}

