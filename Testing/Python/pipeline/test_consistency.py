"""Data consistency and the maps: the exact projection, the consistency map, the uncertainty map,
and how they reach the command line and the Python API (docs/consistency.md)."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import SAMPLE, nearest_model, tiny_model
from MRSuperResLib.pipeline import consistency
from MRSuperResLib.cli import main
from MRSuperResLib.errors import MRSuperResError
from MRSuperResLib.evaluation.slices import pad_to_multiple, prepare_slices
from MRSuperResLib.pipeline.enhance import enhance_volume, super_resolve_slices
from MRSuperResLib.evaluation.map_scores import Ranking
from MRSuperResLib.scans.resample import downsample, upsample
from MRSuperResLib.scans.volumes import Volume, read_volume


@pytest.fixture(scope="module")
def real_lr():
    """Real MRI: the bundled T1 slab's axial slices in [0, 1], its bilinear x4 LR, and the slice indices."""
    gt, keep = prepare_slices(read_volume(SAMPLE).data, 2)
    return gt, np.clip(downsample(pad_to_multiple(gt, 4), 4, "bilinear"), 0, 1), keep


def test_exact_projection_reproduces_the_input_on_real_mri(real_lr):
    _, lr, _ = real_lr
    rng = np.random.default_rng(0)
    # an output far from consistent: bicubic plus strong noise, touching 0 and 1 in places
    sr = np.clip(upsample(lr, 4, "bicubic") + rng.normal(0, 0.1, (lr.shape[0], lr.shape[1] * 4, lr.shape[2] * 4)),
                 0, 1).astype(np.float32)
    assert np.abs(consistency.residual(sr, lr)).max() > 0.05
    exact = consistency.project_exact(sr, lr)
    assert exact.min() >= 0 and exact.max() <= 1
    assert np.abs(consistency.reacquire(exact, 4) - lr).max() < 1e-5
    # it is the nearest such output: where no box clips, only a constant per box moved
    moved = exact - sr
    blocks = moved.reshape(lr.shape[0], lr.shape[1], 4, lr.shape[2], 4)
    unclipped = (exact > 0).reshape(blocks.shape).all((2, 4)) & (exact < 1).reshape(blocks.shape).all((2, 4))
    spread = blocks.max((2, 4)) - blocks.min((2, 4))
    assert spread[unclipped].max() < 1e-5 and unclipped.mean() > 0.5


def test_a_structure_painted_into_the_output_shows_in_the_map_there_and_nowhere_else(real_lr):
    _, lr, _ = real_lr
    consistent = consistency.project_exact(np.clip(upsample(lr, 4, "bicubic"), 0, 1).astype(np.float32), lr)
    painted = consistent.copy()
    painted[20, 80:88, 100:108] = np.clip(painted[20, 80:88, 100:108] + 0.5, 0, 1)     # 2x2 input voxels
    residual = consistency.residual(painted, lr)
    shown = np.abs(residual) > 1e-4
    assert shown.sum() == 4 and shown[20, 20:22, 25:27].all()
    assert (residual[20, 20:22, 25:27] > 0.05).all()                  # brighter than the scan: positive
    grid = consistency.on_output_grid(residual, 4)
    assert grid.shape == painted.shape
    assert (np.abs(grid) > 1e-4).sum() == 64 and (np.abs(grid[20, 80:88, 100:108]) > 1e-4).all()


def perturbed_nearest(seed: int, symmetric: bool):
    """Nearest-neighbour upsampling (conftest.nearest_model) with every kernel perturbed at random:
    a network with real output. `symmetric`: each kernel then averaged over the 8 symmetries of
    the square, which makes the network exactly flip/rotation-equivariant (the rest of it is
    pointwise or nearest upsampling)."""
    model = nearest_model()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                w = m.weight + 0.05 * torch.randn(m.weight.shape, generator=gen)
                if symmetric:
                    w = sum(torch.rot90(w.flip(-1) if f else w, k, (-2, -1)) for k in range(4) for f in (0, 1)) / 8
                m.weight.copy_(w)
    return model


def test_the_uncertainty_of_an_equivariant_network_is_zero(real_lr):
    _, lr, _ = real_lr
    x = lr[10:13]
    for model, zero in ((perturbed_nearest(0, True), True), (perturbed_nearest(0, False), False)):
        spread = np.empty((3, x.shape[1] * 4, x.shape[2] * 4), np.float32)
        out = super_resolve_slices(model, x, device="cpu", precision="fp32", self_ensemble=True,
                                   consistency="none", spread=spread)
        assert out.std() > 0.05                                         # a real image came out
        if zero:
            assert spread.max() < 1e-5
        else:
            assert spread.max() > 1e-3                                  # the test can fail
    with pytest.raises(MRSuperResError, match="self_ensemble"):
        super_resolve_slices(tiny_model(), x, device="cpu", precision="fp32", spread=spread)


def test_maps_land_on_the_output_grid_in_input_units(real_lr):
    data = read_volume(SAMPLE)
    lr = Volume(data.data[::4, ::4, :8] * 3.0 + 100.0, data.affine @ np.diag([4, 4, 1, 1]), {"path": "lr"})
    hr, facts = enhance_volume(lr, tiny_model(), axis=2, precision="fp32", consistency="exact", maps=True)
    assert set(hr.maps) == {"consistency", "uncertainty"}
    for m in hr.maps.values():
        assert m.data.shape == hr.data.shape and np.array_equal(m.affine, hr.affine)
    assert facts["self_ensemble"] is True and facts["consistency"] == "exact"
    # exact: the output averaged over each input voxel is the input, to 1e-3 of its range
    rng = float(np.ptp(lr.data))
    boxes = hr.data.reshape(lr.data.shape[0], 4, lr.data.shape[1], 4, -1).mean((1, 3))
    assert np.abs(boxes - lr.data).max() < 1e-3 * rng
    assert facts["data_consistency"]["output"]["rms"] < 1e-5 < facts["data_consistency"]["network"]["rms"]
    # the consistency map: the network's output re-acquired minus the input, in input units
    assert np.abs(hr.maps["consistency"].data).max() > 1e-3 * rng
    assert hr.maps["uncertainty"].data.min() >= 0


def test_cli_maps_and_exact_consistency(tmp_path, save_tiny, capsys, monkeypatch):
    data = read_volume(SAMPLE)
    src = tmp_path / "lr.nii.gz"
    nib.save(nib.Nifti1Image(data.data[::4, ::4, :6].astype(np.float32), data.affine @ np.diag([4, 4, 1, 1])),
             str(src))
    weights = save_tiny(tiny_model())
    out, maps = tmp_path / "sr.nii.gz", tmp_path / "maps"
    assert main(["enhance", str(src), "-o", str(out), "--model", str(weights), "--axis", "2", "--precision", "fp32",
                 "--consistency", "exact", "--maps", str(maps)]) == 0
    printed = capsys.readouterr().out
    assert "data consistency" in printed and "uncertainty" in printed
    sr, lr = nib.load(str(out)), nib.load(str(src)).get_fdata()
    for name in ("consistency", "uncertainty"):
        m = nib.load(str(maps / f"sr_{name}.nii.gz"))
        assert m.shape == sr.shape and np.allclose(m.affine, sr.affine)
    boxes = sr.get_fdata().reshape(lr.shape[0], 4, lr.shape[1], 4, -1).mean((1, 3))
    assert np.abs(boxes - lr).max() < 1e-3 * np.ptp(lr)
    # a map that cannot be written takes the output and the other map with it: all or nothing
    import MRSuperResLib.scans.volumes as volumes
    real_write = volumes.write_volume

    def failing(volume, path, dtype="float32"):
        if "uncertainty" in str(path):
            raise MRSuperResError(f"cannot write {path}: disk full (test)")
        return real_write(volume, path, dtype)

    monkeypatch.setattr(volumes, "write_volume", failing)
    assert main(["enhance", str(src), "-o", str(tmp_path / "all.nii.gz"), "--model", str(weights), "--axis", "2",
                 "--precision", "fp32", "--maps", str(tmp_path / "maps2")]) == 2
    monkeypatch.undo()
    assert "disk full" in capsys.readouterr().err
    assert not (tmp_path / "all.nii.gz").exists() and not list((tmp_path / "maps2").glob("*"))
    # refused in one line before any work, nothing written
    (tmp_path / "afile").write_text("x")
    assert main(["enhance", str(src), "-o", str(tmp_path / "b.nii.gz"), "--model", str(weights),
                 "--maps", str(tmp_path / "afile")]) == 2
    assert "--maps" in capsys.readouterr().err and not (tmp_path / "b.nii.gz").exists()
    with pytest.raises(SystemExit) as exc:
        main(["enhance", str(src), "-o", str(tmp_path / "c.nii.gz"), "--model", str(weights), "--consistency", "fuzzy"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert not (tmp_path / "c.nii.gz").exists()


def test_ranking_scores_a_map_that_is_the_error_perfectly_and_a_random_one_near_chance():
    rng = np.random.default_rng(0)
    truth = np.full((4, 64, 64), 0.5, np.float32)
    output = truth + rng.normal(0, 0.05, truth.shape).astype(np.float32) * rng.uniform(0, 2, (4, 1, 64))
    perfect, noise = Ranking(4), Ranking(4)
    perfect.add(truth, output, {"m": np.abs(output - truth)})
    noise.add(truth, output, {"m": rng.uniform(size=truth.shape)})
    assert perfect.scores()["m"]["spearman"] > 0.99 and perfect.scores()["m"]["top_caught"] == 1.0
    assert abs(noise.scores()["m"]["spearman"]) < 0.3
    air = Ranking(4)                           # air in truth and output is not scored
    air.add(np.zeros_like(truth), np.zeros_like(truth), {"m": np.abs(output - truth)})
    assert air.scores()["m"]["patches"] == 0


@pytest.mark.slow
def test_evaluate_reports_the_maps(tmp_path, save_tiny):
    weights = save_tiny(tiny_model())
    out = tmp_path / "ev"
    assert main(["evaluate", str(SAMPLE), "--model", str(weights), "--axis", "2", "--precision", "fp32",
                 "--out", str(out)]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["maps"]["consistency"]["patches"] > 100
    assert result["data_consistency"]["network"]["rms"] > 0
    assert result["model"]["consistency"] == consistency.FALLBACK       # auto, resolved: the card names none


@pytest.mark.slow
def test_a_gan_model_also_gets_the_detail_map(tmp_path):
    """For a GAN model whose card names its fidelity partner: |GAN - fidelity| / 2 of one pass of
    each, in input units, on the output grid; evaluate --maps scores it."""
    from MRSuperResLib.models.catalog import load_model
    from MRSuperResLib.evaluation.protocol import evaluate
    from MRSuperResLib.scans.volumes import normalise
    from MRSuperResLib.models.weights import save_model

    fid_path, gan_path = tmp_path / "f.safetensors", tmp_path / "g.safetensors"
    save_model(perturbed_nearest(0, False), fid_path, {"name": "f", "stage": "psnr", "detail_partner": str(gan_path)})
    save_model(perturbed_nearest(1, False), gan_path, {"name": "g", "stage": "gan", "detail_partner": str(fid_path)})
    gan, _ = load_model(str(gan_path))
    fid, _ = load_model(str(fid_path))
    data = read_volume(SAMPLE)
    lr = Volume(data.data[::4, ::4, 20:23], data.affine @ np.diag([4, 4, 1, 1]), {"path": "lr"})
    hr, facts = enhance_volume(lr, gan, axis=2, precision="fp32", consistency="none", maps=True)
    assert set(hr.maps) == {"consistency", "uncertainty", "detail"} and "detail_spread" in facts
    stack = normalise(np.moveaxis(lr.data, 2, 0))
    one = {m: super_resolve_slices(m, stack, device="cpu", precision="fp32", consistency="none") for m in (gan, fid)}
    expected = np.moveaxis(np.abs(one[gan] - one[fid]) / 2, 0, 2) * np.ptp(lr.data)
    assert hr.maps["detail"].data.shape == hr.data.shape
    assert np.abs(hr.maps["detail"].data - expected).max() < 1e-4 * np.ptp(lr.data)
    assert expected.max() > 1e-2 * np.ptp(lr.data)                   # the two models really differ
    # a fidelity model has no detail map
    hr_fid, _ = enhance_volume(lr, fid, axis=2, precision="fp32", maps=True)
    assert "detail" not in hr_fid.maps
    result = evaluate([str(SAMPLE)], gan, axis=2, precision="fp32", maps=True, baselines=("bicubic",))
    assert set(result["maps"]) == {"consistency", "uncertainty", "detail"}
    assert result["model"]["self_ensemble"] is True


def test_auto_applies_the_step_the_model_card_names(tmp_path):
    """`auto` (the default everywhere) is the card's step: a card naming exact gets outputs that
    re-acquire to the input, in enhance and evaluate alike; a card naming no step gets anchor, and a
    step asked for by name wins over the card's."""
    from MRSuperResLib.evaluation.protocol import evaluate
    from MRSuperResLib.models.weights import load_generator, save_model

    assert consistency.DEFAULT == "auto" and consistency.for_model("auto", object()) == consistency.FALLBACK
    with pytest.raises(ValueError, match="consistency must be one of auto, anchor, exact, none"):
        consistency.for_model("box", None)
    path = tmp_path / "exact.safetensors"
    save_model(tiny_model(), path, {"training_data": "random init (test)", "iterations": 0, "consistency": "exact"})
    model, card = load_generator(path)
    assert card["consistency"] == "exact" and consistency.for_model("auto", model) == "exact"
    assert consistency.for_model("none", model) == "none"                     # an explicit step wins
    rng = np.random.default_rng(0)
    lr = rng.random((2, 16, 16)).astype(np.float32) * 0.8 + 0.1
    out = super_resolve_slices(model, lr, device="cpu", precision="fp32")
    assert np.abs(consistency.residual(out, lr)).max() < 1e-5
    volume = Volume(rng.random((16, 16, 3)).astype(np.float32) * 100, np.eye(4), {"path": "v.nii.gz"})
    _, facts = enhance_volume(volume, model, axis=2, device="cpu", precision="fp32")
    assert facts["consistency"] == "exact"
    result = evaluate([str(SAMPLE)], model, axis=2, precision="fp32", device="cpu", baselines=())
    assert result["model"]["consistency"] == "exact"
    model.card = {**card, "consistency": "none"}
    assert consistency.for_model(consistency.DEFAULT, model) == "none"
