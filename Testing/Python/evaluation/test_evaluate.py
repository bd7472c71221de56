"""`evaluate` against an independent computation of Rashid et al.'s protocol, and its outputs."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from conftest import tiny_model, write_nifti
from MRSuperResLib.errors import MRSuperResError
from MRSuperResLib.evaluation.protocol import evaluate


def keys_cubic_matrix(n_in: int, s: int, a: float = -0.75) -> np.ndarray:
    """Cubic convolution (Keys) upsampling matrix, half-pixel centres, replicated borders."""
    def kernel(d):
        d = np.abs(d)
        return np.where(d <= 1, (a + 2) * d ** 3 - (a + 3) * d ** 2 + 1,
                        np.where(d < 2, a * d ** 3 - 5 * a * d ** 2 + 8 * a * d - 4 * a, 0.0))
    m = np.zeros((n_in * s, n_in))
    for i in range(n_in * s):
        x = (i + 0.5) / s - 0.5
        for t in range(int(np.floor(x)) - 1, int(np.floor(x)) + 3):
            m[i, min(max(t, 0), n_in - 1)] += kernel(x - t)
    return m


def independent_protocol(volume: np.ndarray, s: int = 4):
    """Per-volume min-max, blank slices dropped, zero-pad, bilinear x s (OpenCV INTER_LINEAR:
    mean of the two middle pixels), bicubic back, clip, crop, scikit-image SSIM/PSNR."""
    v = (volume - volume.min()) / (volume.max() - volume.min())
    ssims, psnrs = [], []
    for k in range(v.shape[2]):
        gt = v[:, :, k].astype(np.float64)
        if gt.max() <= 0:
            continue
        h, w = gt.shape
        padded = np.pad(gt, ((0, -h % s), (0, -w % s)))
        H, W = padded.shape
        lr = padded.reshape(H // s, s, W // s, s)[:, s // 2 - 1: s // 2 + 1, :, s // 2 - 1: s // 2 + 1].mean((1, 3))
        up = keys_cubic_matrix(H // s, s) @ lr @ keys_cubic_matrix(W // s, s).T
        up = np.clip(up, 0, 1)[:h, :w]
        ssims.append(structural_similarity(gt, up, data_range=1.0))
        psnrs.append(peak_signal_noise_ratio(gt, up, data_range=1.0))
    return np.mean(ssims), np.mean(psnrs), len(ssims)


@pytest.fixture
def gt_file(tmp_path, sample_volume):
    data, affine = sample_volume
    cropped = data[:-2, :-1, :12] * 3.7 + 50.0          # not a multiple of 4; units not [0, 1]
    cropped[:, :, 5] = 50.0                              # a blank slice (the volume minimum)
    return write_nifti(tmp_path / "gt.nii.gz", cropped, affine), cropped


def test_bicubic_row_matches_independent_protocol(gt_file, tmp_path):
    path, volume = gt_file
    result = evaluate([str(path)], None, scale=4, degradation="bilinear", axis=2, out_dir=tmp_path / "out")
    ssim, psnr, n = independent_protocol(volume)
    assert result["n_slices"] == n == 11                                 # blank slice dropped
    row = result["methods"]["bicubic"]
    assert abs(row["ssim"]["mean"] - ssim) < 1e-3 and abs(row["psnr"]["mean"] - psnr) < 0.02
    # nearest < bilinear < bicubic in PSNR, as everywhere
    m = result["methods"]
    assert m["nearest"]["psnr"]["mean"] < m["bilinear"]["psnr"]["mean"] < m["bicubic"]["psnr"]["mean"]


def test_outputs_with_a_model(gt_file, tmp_path):
    path, _ = gt_file
    out = tmp_path / "out"
    result = evaluate([str(path), str(path)], tiny_model(4), model_name="tiny", scale=4, degradation="kspace",
                      axis="auto", out_dir=out)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["scale"] == 4 and on_disk["degradation"] == "kspace" and on_disk["n_slices"] == 22
    assert set(on_disk["methods"]) == {"model", "nearest", "bilinear", "bicubic", "lanczos"}
    for stats in on_disk["methods"].values():
        for metric in ("ssim", "psnr", "nrmse", "rmse", "mae", "vif"):
            assert np.isfinite(stats[metric]["mean"]) and stats[metric]["std"] >= 0
    rows = list(csv.DictReader(open(out / "per_slice.csv")))
    assert len(rows) == 22 * 5 and rows[0]["method"] == "model"
    assert (out / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["methods"]["model"]["ssim"]["mean"] == on_disk["methods"]["model"]["ssim"]["mean"]


def test_refusals(gt_file, tmp_path):
    path, _ = gt_file
    with pytest.raises(MRSuperResError, match="is x2, but --scale 4"):
        evaluate([str(path)], tiny_model(2), scale=4)
    small = write_nifti(tmp_path / "small.nii.gz", np.random.rand(20, 40, 3))
    with pytest.raises(MRSuperResError, match="too small for x4"):
        evaluate([str(small)], None, scale=4, axis=2)
    (tmp_path / "file").write_text("x")
    with pytest.raises(MRSuperResError, match="not a folder"):
        evaluate([str(path)], None, scale=4, out_dir=tmp_path / "file")


def test_outputs_record_the_models_name_and_sha256_without_being_told(tmp_path, save_tiny):
    """Python `evaluate` and `enhance_volume` take provenance from the loaded model; files carry it."""
    import nibabel as nib
    import nrrd

    from MRSuperResLib import enhance_volume, load_model, read_volume, write_volume
    from MRSuperResLib.files import sha256_of

    weights = save_tiny(tiny_model(4), "my-model")
    model, card = load_model(str(weights))
    src = tmp_path / "hr.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((48, 48, 3)).astype(np.float32), np.eye(4)), str(src))
    result = evaluate([str(src)], model, scale=4, axis=2, out_dir=tmp_path / "ev")
    assert result["model"]["name"] == "my-model" and result["model"]["sha256"] == sha256_of(weights)
    written = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert written["model"]["sha256"] == sha256_of(weights)
    hr, facts = enhance_volume(read_volume(src), model, axis=2, device="cpu")
    assert facts["model"] == {"name": "my-model", "sha256": sha256_of(weights)}
    for name in ("sr.nii.gz", "sr.nrrd"):
        write_volume(hr, tmp_path / name)
    descrip = nib.load(str(tmp_path / "sr.nii.gz")).header["descrip"].item().decode()
    assert descrip == f"MRSuperRes my-model x4 sha256:{sha256_of(weights)[:12]}"
    assert nrrd.read_header(str(tmp_path / "sr.nrrd"))["content"] == descrip


def test_scale_2_takes_the_x2_model_and_evaluate_follows_the_models_scale(gt_file, tmp_path, monkeypatch, capsys):
    """`--scale 2` without --model takes the shipped mri-x2-fidelity (refused, naming what ships,
    where there is none); a model given sets evaluate's scale when --scale is not."""
    from MRSuperResLib.models import catalog
    from MRSuperResLib.cli import main
    from MRSuperResLib.models.weights import save_model

    path, _ = gt_file
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setattr(catalog, "SHIPPED_DIR", shipped)
    monkeypatch.setenv("MRSUPERRES_MODEL_REGISTRY", str(tmp_path / "no-registry.json"))   # none offered either
    assert main(["evaluate", str(path), "--scale", "2", "--out", str(tmp_path / "e0")]) == 2
    assert "no x2 model ships" in capsys.readouterr().err
    save_model(tiny_model(2), shipped / "mri-x2-fidelity.safetensors", {"training_data": "test", "iterations": 0})
    assert catalog.default_model_for("in-plane", 2) == "mri-x2-fidelity"
    assert main(["evaluate", str(path), "--scale", "2", "--precision", "fp32", "--out", str(tmp_path / "e1")]) == 0
    assert json.loads((tmp_path / "e1" / "metrics.json").read_text())["scale"] == 2
    assert main(["evaluate", str(path), "--model", str(shipped / "mri-x2-fidelity.safetensors"), "--precision",
                 "fp32", "--out", str(tmp_path / "e2")]) == 0
    assert json.loads((tmp_path / "e2" / "metrics.json").read_text())["scale"] == 2
