"""Through-plane super-resolution of thick-slice scans: the slice-profile model, the grid rule
along the slice axis (a phantom lands where it was), the direction auto rule, the plan shown
before a run, and one clear line for each bad input."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import SAMPLE, oblique_affine, tiny_model, write_nifti

from MRSuperResLib.scans import geometry, slice_profile
from MRSuperResLib.cli import main
from MRSuperResLib.errors import MRSuperResError
from MRSuperResLib.engine.slices import SliceEngine
from MRSuperResLib.pipeline.enhance import enhance_volume
from MRSuperResLib.pipeline.plan import choose_direction, make_plan
from MRSuperResLib.scans.volumes import Volume, read_volume


def test_factors_snap_to_integers_and_counts_follow_the_grid_rule():
    assert slice_profile.factor_of(4.4, 0.88) == 5.0
    assert slice_profile.factor_of(5.0, 2.0) == 2.5
    assert slice_profile.fine_count(36, 5.0) == 180 and slice_profile.fine_count(37, 2.5) == 92
    assert slice_profile.coarse_count(182, 5.0) == 36


@pytest.mark.parametrize("profile", slice_profile.PROFILES)
def test_slice_profiles_weigh_the_fine_signal_around_each_slice_centre(profile):
    m = slice_profile.profile_matrix(40, 5.0, 5.0, profile)
    assert m.shape == (8, 40) and np.allclose(m.sum(1), 1)
    centre = (m * np.arange(40)).sum(1)
    assert np.allclose(centre[2:-2], 5 * np.arange(2, 6) + 2, atol=1e-3)   # slice j centred on 5 j + 2
    if profile == "rect":                                                  # contiguous boxes: block means
        assert np.allclose(m[3, 15:20], 0.2) and m[3, :15].sum() == 0 and m[3, 20:].sum() == 0
    gaps = slice_profile.profile_matrix(40, 5.0, 3.0, "rect")              # 3 mm slices, 5 mm apart
    assert np.count_nonzero(gaps[3]) == 3
    with pytest.raises(MRSuperResError, match="thickness must be positive"):
        slice_profile.profile_matrix(40, 5.0, 0.0)


def test_cubic_interpolation_is_exact_for_smooth_signals_and_keeps_constants():
    coarse = np.arange(12, dtype=np.float64)
    for f in (2.0, 2.5, 5.0):
        fine = slice_profile.cubic_matrix(12, f) @ (0.3 * coarse + 1)
        positions = (np.arange(len(fine)) + 0.5) / f - 0.5
        inside = (positions > 1) & (positions < 10)
        assert np.allclose(fine[inside], 0.3 * positions[inside] + 1)
    const = np.full((6, 5, 9), 0.7, np.float32)
    thick = slice_profile.simulate_thick(np.full((6, 5, 45), 0.7, np.float32), 2, 5.0)
    assert np.allclose(thick, 0.7) and np.allclose(slice_profile.interpolate(const, 2, 5.0), 0.7)


def test_training_pairs_are_degraded_along_rows_only():
    rng = np.random.default_rng(0)
    hr = np.zeros((64, 64), np.float32)
    hr[:, 20:40] = 1.0                                   # a vertical band: constant along the rows
    lr = slice_profile.training_pair(hr, rng)
    assert lr.shape == hr.shape and lr.dtype == np.float32
    assert np.abs(lr[4:-4] - hr[4:-4]).mean() < 0.03      # nothing to blur along the rows (noise only)
    hr2 = np.zeros((64, 64), np.float32)
    hr2[20:40] = 1.0                                     # a horizontal band: blurred across its edges
    lr2 = slice_profile.training_pair(hr2, np.random.default_rng(1))
    assert np.abs(lr2[18:22] - hr2[18:22]).max() > 0.2


def test_direction_auto_takes_thick_slices_across_and_everything_else_in_plane():
    def vol(spacing, shape=(20, 20, 8)):
        return Volume(np.zeros(shape, np.float32), oblique_affine(spacing))

    assert choose_direction(vol((1, 1, 5)))[:2] == ("through-plane", 2)
    assert choose_direction(vol((5, 1, 1), (8, 20, 20)))[:2] == ("through-plane", 0)
    assert choose_direction(vol((1, 1, 1.4)))[0] == "in-plane"             # below 1.5x: in-plane
    assert choose_direction(vol((4, 4, 1)))[0] == "in-plane"               # a volume degraded in-plane
    assert choose_direction(vol((1, 1, 5), (20, 20, 1)))[0] == "in-plane"  # a 2D image
    with pytest.raises(MRSuperResError, match="not thicker than the plane"):
        choose_direction(vol((1, 1, 1)), "through-plane")
    with pytest.raises(MRSuperResError, match="2D image"):
        choose_direction(vol((1, 1, 5), (20, 20, 1)), "through-plane")


def test_the_plan_says_size_and_time_and_warns_about_fine_planes():
    thick = Volume(np.zeros((256, 256, 36), np.float32), oblique_affine((1, 1, 5)))
    plan = make_plan(thick, "through-plane", 2, "auto", seconds_per_voxel=1e-5)
    assert plan.output_shape == [256, 256, 180] and np.allclose(plan.output_spacing, (1, 1, 1))
    assert plan.output_bytes == 4 * 256 * 256 * 180 and plan.seconds == pytest.approx(2 * 256 * 256 * 180 * 1e-5)
    assert "[256, 256, 36] -> [256, 256, 180]" in plan.summary() and "45 MB" in plan.summary()
    assert plan.warnings == []
    in_plane = make_plan(thick, "in-plane", 2, "asked for")
    assert in_plane.output_shape == [1024, 1024, 36] and "already 1 x 1 mm" in in_plane.warnings[0]
    assert "the 5 mm slices stay as they are: --direction through-plane" in in_plane.warnings[1]
    assert make_plan(thick, "through-plane", 2, "", spacing=2.5).output_shape == [256, 256, 72]
    with pytest.raises(MRSuperResError, match="not finer than the slice spacing"):
        make_plan(thick, "through-plane", 2, "", spacing=6)
    with pytest.raises(MRSuperResError, match="must be positive"):
        make_plan(thick, "through-plane", 2, "", spacing=-1)


def test_a_thick_phantom_lands_back_on_its_isotropic_grid(monkeypatch):
    """Isotropic data -> 5 mm slices (the grid rule's inverse) -> through-plane: the output grid is
    the original one, and a bright plane sits where it was. With the network replaced by identity
    the output is exactly the cubic interpolation, so the two orientations are put back right."""
    affine = oblique_affine((1.0, 1.0, 1.0))
    hr = np.zeros((24, 20, 40), np.float32)
    hr[:, :, 22] = 1.0
    hr[5:9, 3:7, :] += 0.5                       # something that differs between the two orientations
    thick = Volume(slice_profile.simulate_thick(hr, 2, 5.0),
                   geometry.resample_affine(affine, 2, 1 / 5, along=(2,)))
    seen = []

    def identity(self, x):
        seen.append(x.shape)
        return np.clip(x, 0, 1)

    monkeypatch.setattr(SliceEngine, "forward", identity)
    out, facts = enhance_volume(thick, tiny_model(1), direction="auto", device="cpu", precision="fp32",
                                consistency="none")
    assert out.data.shape == hr.shape and np.allclose(out.affine, affine, atol=1e-6)
    assert facts["direction"] == "through-plane" and facts["factor"] == 5.0
    assert {s[1] for s in seen if s[1:] != (256, 256)} == {40}    # the slice axis as rows (256^2: the timing)
    lo, hi = float(thick.data.min()), float(thick.data.max())
    expected = np.clip(slice_profile.interpolate((thick.data - lo) / (hi - lo), 2, 5.0), 0, 1) * (hi - lo) + lo
    assert np.allclose(out.data, expected, atol=1e-5)
    assert abs(int(np.argmax(out.data[12, 15])) - 22) <= 1


def test_cli_through_plane_writes_the_fine_grid_and_says_what_it_will_do(tmp_path, save_tiny, capsys):
    affine = oblique_affine((0.88, 0.88, 4.4))
    data = np.random.default_rng(0).random((24, 20, 6)).astype(np.float32) * 100
    src = write_nifti(tmp_path / "thick.nii.gz", data, affine)
    out = tmp_path / "iso.nii.gz"
    assert main(["enhance", str(src), "-o", str(out), "--device", "cpu"]) == 0        # the shipped model
    captured = capsys.readouterr()
    assert "through-plane x5 along axial (k) (auto: slices 4.4 mm apart, plane 0.88 mm)" in captured.err
    assert "[24, 20, 6] -> [24, 20, 30]" in captured.err and " MB as float32, about " in captured.err
    img = nib.load(str(out))
    assert img.shape == (24, 20, 30)
    assert np.allclose(img.affine, geometry.resample_affine(affine, 2, 5.0, along=(2,)), atol=1e-4)
    assert np.allclose(nib.affines.voxel_sizes(img.affine), (0.88, 0.88, 0.88), atol=1e-5)
    assert b"mri-thick-x1 through-plane x5" in img.header["descrip"].tobytes()
    # a model given decides auto: an x4 one means in-plane, as it always did, with a word on the slices
    x4 = save_tiny(tiny_model(4), "tiny4")
    assert main(["enhance", str(src), "-o", str(tmp_path / "x4.nii.gz"), "--model", str(x4), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "in-plane x4 along axial (k) (auto: the model given is x4)" in err
    assert "the 4.4 mm slices stay as they are" in err


@pytest.mark.parametrize("argv, pattern", [
    (["--direction", "through-plane"], "not thicker than the plane"),
    (["--direction", "in-plane", "--spacing", "1"], "--spacing applies to"),
    (["--spacing", "9"], "not finer than the slice spacing"),
    (["--spacing", "0"], "must be positive"),
    (["--self-ensemble"], "in-plane super-resolution only"),
    (["--maps", "--orientations", "1"], "--maps needs --orientations 2"),
])
def test_bad_through_plane_requests_are_one_line_and_write_nothing(tmp_path, save_tiny, capsys, argv, pattern):
    rng = np.random.default_rng(0)
    iso = write_nifti(tmp_path / "iso.nii.gz", rng.random((16, 16, 16)).astype(np.float32))
    thick = write_nifti(tmp_path / "thick.nii.gz", rng.random((16, 16, 4)).astype(np.float32), np.diag([1, 1, 5, 1]))
    src = iso if "through-plane" in argv else thick
    model = save_tiny(tiny_model(1), "tiny1")
    before = set(tmp_path.iterdir())
    code = main(["enhance", str(src), "-o", str(tmp_path / "out.nii.gz"), "--model", str(model), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and pattern in err[0], err
    assert set(tmp_path.iterdir()) == before


def test_an_x1_model_is_refused_in_plane_and_an_x4_one_through_plane(tmp_path):
    rng = np.random.default_rng(0)
    iso = Volume(rng.random((16, 16, 16)).astype(np.float32), np.eye(4))
    with pytest.raises(MRSuperResError, match="x1 model is a through-plane model"):
        enhance_volume(iso, tiny_model(1), device="cpu")
    thick = Volume(rng.random((16, 16, 4)).astype(np.float32), np.diag([1, 1, 5, 1]))
    with pytest.raises(MRSuperResError, match="needs an x1 through-plane model"):
        enhance_volume(thick, tiny_model(4), direction="through-plane", device="cpu")


def test_nrrd_slice_thickness_is_read_from_the_header(tmp_path):
    import nrrd

    path = tmp_path / "t.nrrd"
    nrrd.write(str(path), np.random.default_rng(0).random((4, 4, 3)).astype(np.float32),
               {"space": "left-posterior-superior", "space directions": np.diag([1.0, 1.0, 5.0]),
                "kinds": ["domain"] * 3, "thicknesses": [np.nan, np.nan, 3.0]})
    assert read_volume(path).meta["thicknesses"][2] == 3.0
    assert "thicknesses" not in read_volume(SAMPLE).meta


# ----------------------------------------------------------------------------- training and evaluation

TINY_X1 = ["--blocks", "1", "--features", "16", "--growth", "8", "--batch", "2", "--patch", "32",
           "--precision", "fp32", "--log-every", "2"]


@pytest.fixture(scope="module")
def thick_scan(tmp_path_factory):
    """A real 1 mm slab made into 4 mm axial slices (NRRD with a 3 mm slice thickness: gaps)."""
    import nrrd

    folder = tmp_path_factory.mktemp("thick")
    fine = read_volume(SAMPLE)
    thick = slice_profile.simulate_thick(fine.data[:, :, :48], 2, 4.0, 3.0, "rect")
    path = folder / "thick.nrrd"
    nrrd.write(str(path), thick, {"space": "left-posterior-superior",
                                  "space directions": np.diag([1.0, 1.0, 4.0]), "kinds": ["domain"] * 3,
                                  "thicknesses": [np.nan, np.nan, 3.0]})
    return path


def test_a_through_plane_model_trains_with_an_input_skip_and_records_its_slice_profile(tmp_path):
    from MRSuperResLib.events import read_events
    from MRSuperResLib.models.weights import load_generator

    out = tmp_path / "run"
    assert main(["train", "--data", str(SAMPLE), "--out", str(out), "--scale", "1", "--degrade", "thick",
                 "--iters", "4", "--checkpoint-every", "4", *TINY_X1]) == 0
    model, card = load_generator(out / "model.safetensors")
    assert model.scale == 1 and model.config.get("input_skip") is True
    assert card["slice_profile"]["factors"] == [2.0, 6.0] and "thick slices" in card["metrics"]["protocol"]
    val = [e for e in read_events(out / "events.jsonl") if e["event"] == "validation"][-1]
    assert set(val) >= {"model", "bicubic"}                      # at x1 the baseline is the cubic input


@pytest.mark.parametrize("argv, pattern", [
    (["--scale", "1"], "--scale 1 trains a through-plane model and needs --degrade thick"),
    (["--degrade", "thick"], "needs --degrade thick, which only it uses"),
    (["--scale", "1", "--degrade", "thick", "--slice-factors", "0.5,2"], "--slice-factors must be 'lo,hi'"),
    (["--scale", "1", "--degrade", "thick", "--slice-thickness", "0,1"], "--slice-thickness must be 'lo,hi'"),
])
def test_through_plane_training_options_are_checked(tmp_path, capsys, argv, pattern):
    code = main(["train", "--data", str(SAMPLE), "--out", str(tmp_path / "run"), *TINY_X1, *argv])
    assert code == 2 and pattern in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_self_supervised_options_come_from_the_scan(thick_scan, tmp_path, capsys):
    from MRSuperResLib.training.self_supervised import SELF_ITERS, self_supervised_options
    from MRSuperResLib.training.config import build_config

    options = self_supervised_options(str(thick_scan), {})
    assert options["slice_factors"] == [4.0, 4.0] and options["slice_thickness"] == [0.75, 0.75]
    assert options["axis"] == "2" and options["scale"] == 1 and options["iters"] == SELF_ITERS
    config = build_config({"fine_tune_on": str(thick_scan), "out": str(tmp_path / "run"), "iters": 7,
                           "init": "scratch"})
    assert config.iters == 7 and config.init == "scratch" and config.data == [str(thick_scan)]
    with pytest.raises(MRSuperResError, match="leave out --data"):
        build_config({"fine_tune_on": str(thick_scan), "data": [str(SAMPLE)], "out": str(tmp_path / "r2")})
    iso = tmp_path / "iso.nii.gz"
    write_nifti(iso, np.random.default_rng(0).random((16, 16, 16)).astype(np.float32))
    assert main(["train", "--self", str(iso), "--out", str(tmp_path / "r3")]) == 2
    assert "not thicker than the plane" in capsys.readouterr().err


def test_self_supervised_fine_tune_runs_and_registers_its_model(thick_scan, tmp_path, save_tiny, capsys):
    from MRSuperResLib.models.catalog import cache_dir
    from MRSuperResLib.models.rrdbnet import RRDBNet

    start = save_tiny(RRDBNet(1, 1, scale=1, num_feat=16, num_block=1, num_grow_ch=8, input_skip=True), "start")
    out = tmp_path / "self"
    assert main(["train", "--self", str(thick_scan), "--out", str(out), "--init", str(start), "--iters", "2",
                 "--patch", "32", "--batch", "2", "--precision", "fp32"]) == 0
    captured = capsys.readouterr()
    assert "registered as model 'thick-self'" in captured.out
    assert "self-supervised fine-tune of start on" in captured.err and "slices 4x the in-plane spacing apart, " \
        "0.75 of that thick, 2 iterations, about " in captured.err
    assert (cache_dir() / "thick-self.safetensors").exists()
    sr = tmp_path / "sr.nii.gz"
    assert main(["enhance", str(thick_scan), "-o", str(sr), "--model", "thick-self", "--precision", "fp32"]) == 0
    assert nib.load(str(sr)).shape[2] == 48


@pytest.mark.slow
def test_evaluate_thick_scores_every_orientation_against_cubic(tmp_path, save_tiny, capsys):
    fine = read_volume(SAMPLE)
    gt = write_nifti(tmp_path / "gt.nii.gz", fine.data[:, :, :40], fine.affine)
    model = save_tiny(RRDBNet_x1(), "x1")
    out = tmp_path / "eval"
    assert main(["evaluate", str(gt), "--degrade", "thick", "--thickness", "5", "--model", str(model),
                 "--out", str(out), "--precision", "fp32"]) == 0
    text = capsys.readouterr().out
    assert "thick 5 mm (gaussian), perpendicular slices" in text and "cubic" in text
    import json
    result = json.loads((out / "metrics.json").read_text())
    assert set(result["orientations"]) == {"perpendicular", "sagittal", "coronal"}
    assert result["n_slices"] == 40 and result["slices_per_volume"][0]["factor"] == 5.0
    assert (out / "figure.png").stat().st_size > 10_000
    assert "orientation" in (out / "per_slice.csv").read_text().splitlines()[0]


def test_degrade_thick_then_enhance_lands_on_the_original_grid(tmp_path, save_tiny):
    fine = read_volume(SAMPLE)
    gt = write_nifti(tmp_path / "gt.nii.gz", fine.data[:, :, :40], fine.affine)
    thick = tmp_path / "thick.nii.gz"
    assert main(["degrade", str(gt), "-o", str(thick), "--degrade", "thick", "--thickness", "5"]) == 0
    assert nib.load(str(thick)).shape == (fine.data.shape[0], fine.data.shape[1], 8)
    sr = tmp_path / "sr.nii.gz"
    assert main(["enhance", str(thick), "-o", str(sr), "--model", str(save_tiny(RRDBNet_x1(), "x1")),
                 "--precision", "fp32"]) == 0
    out = nib.load(str(sr))
    assert out.shape == (fine.data.shape[0], fine.data.shape[1], 40)
    assert np.allclose(out.affine, fine.affine, atol=1e-3)


def RRDBNet_x1():
    from MRSuperResLib.models.rrdbnet import RRDBNet
    return RRDBNet(1, 1, scale=1, num_feat=16, num_block=1, num_grow_ch=8, input_skip=True).eval()


@pytest.mark.parametrize("command, pattern", [
    (["degrade", "{gt}", "-o", "{out}", "--degrade", "thick", "--thickness", "0"], "--thickness must be positive"),
    (["degrade", "{gt}", "-o", "{out}", "--degrade", "thick", "--thickness", "0.5"], "is not thicker than"),
    (["evaluate", "{gt}", "--degrade", "thick", "--thickness", "-2", "--model", "none", "--out", "{out}"],
     "--thickness must be positive"),
])
def test_a_thickness_that_cannot_be_simulated_is_one_line_and_writes_nothing(tmp_path, capsys, command, pattern):
    gt = write_nifti(tmp_path / "gt.nii.gz", np.random.default_rng(0).random((16, 16, 20)).astype(np.float32))
    out = tmp_path / ("out.nii.gz" if command[0] == "degrade" else "eval")
    before = set(tmp_path.iterdir())
    code = main([c.format(gt=gt, out=out) for c in command])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and pattern in err[0], err
    assert set(tmp_path.iterdir()) == before
