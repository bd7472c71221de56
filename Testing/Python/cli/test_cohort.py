"""Batch enhance over folders, DICOM series and BIDS datasets: outputs and sidecars, resuming,
failures that do not stop the batch, sharding; DICOM read with its geometry."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest
from conftest import ROOT, SAMPLE, tiny_model

from MRSuperResLib.cli import main
from MRSuperResLib.scans.cohort import discover, in_shard, shard_of
from MRSuperResLib.errors import MRSuperResError
from MRSuperResLib.scans.volumes import read_volume

from MRSuperResLib.scans.dicom_write import write_dicom_series, write_multiframe


def small_lr(path, k0=20, k=3):
    """A real low-resolution volume: every 4th voxel of the bundled sample in-plane, k slices."""
    img = nib.load(str(SAMPLE))
    data = np.asarray(img.dataobj, dtype=np.float32)[::4, ::4, k0:k0 + k]
    nib.save(nib.Nifti1Image(data, img.affine @ np.diag([4, 4, 1, 1])), str(path))
    return path


def summary(out):
    with open(out / "mrsuperres_summary.tsv") as f:
        return {r["input"]: r for r in csv.DictReader(f, delimiter="\t")}


@pytest.fixture
def folder(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    small_lr(src / "a.nii.gz")
    small_lr(src / "b.nii.gz", k0=24)
    (src / "c.nii.gz").write_bytes(b"not a volume")
    return src


def test_a_folder_with_a_corrupt_volume_gives_the_others_a_summary_and_exit_1(folder, tmp_path, save_tiny, capsys):
    weights = str(save_tiny(tiny_model()))
    out = tmp_path / "out"
    assert main(["enhance", str(folder), "-o", str(out), "--model", weights, "--precision", "fp32"]) == 1
    rows = summary(out)
    assert [rows[str(folder / n)]["status"] for n in ("a.nii.gz", "b.nii.gz", "c.nii.gz")] == ["done", "done", "failed"]
    assert "not a valid NIFTI" in rows[str(folder / "c.nii.gz")]["message"]
    for name in ("a", "b"):
        sr, lr = read_volume(out / f"{name}_sr.nii.gz"), read_volume(folder / f"{name}.nii.gz")
        assert sr.data.shape == (lr.data.shape[0] * 4, lr.data.shape[1] * 4, lr.data.shape[2])
        side = json.loads((out / f"{name}_sr.json").read_text())
        assert side["input"]["sha256"] and side["model"]["sha256"] and side["options"]["consistency"] == "auto" \
            and side["facts"]["consistency"] == "anchor"                       # auto, as applied
        assert {"version", "device", "precision", "seconds"} <= set(side)
    assert not (out / "c_sr.nii.gz").exists() and not list(out.glob("*.tmp*"))
    capsys.readouterr()

    # a rerun does no work; a changed option redoes it; --overwrite forces
    stamp = (out / "a_sr.nii.gz").stat().st_mtime_ns
    assert main(["enhance", str(folder / "a.nii.gz"), str(folder / "b.nii.gz"), "-o", str(out), "--model", weights,
                 "--precision", "fp32"]) == 0
    assert {r["status"] for r in summary(out).values()} == {"up to date"}
    assert (out / "a_sr.nii.gz").stat().st_mtime_ns == stamp
    assert main(["enhance", str(folder / "a.nii.gz"), "-o", str(out), "--model", weights, "--precision", "fp32",
                 "--consistency", "exact", "--shard", "1/1"]) == 0
    assert summary(out)[str(folder / "a.nii.gz")]["status"] == "done"
    assert json.loads((out / "a_sr.json").read_text())["options"]["consistency"] == "exact"


@pytest.mark.slow
def test_a_killed_batch_resumes_with_the_volume_it_did_not_finish(tmp_path, save_tiny):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        small_lr(src / f"v{i}.nii.gz", k0=18 + 2 * i)
    weights = str(save_tiny(tiny_model()))
    out = tmp_path / "out"
    # the second volume's output is written, then the process is killed before its sidecar
    code = (f"import sys, time, MRSuperResLib.cli.enhance as e\n"
            f"orig = e.enhance_to_files\n"
            f"def slow(volume, output, *a, **k):\n"
            f"    r = orig(volume, output, *a, **k)\n"
            f"    if output.name.startswith('v1'):\n"
            f"        open(sys.argv[1], 'w').close(); time.sleep(60)\n"
            f"    return r\n"
            f"e.enhance_to_files = slow\n"
            f"from MRSuperResLib.cli.commands import main\n"
            f"main(['enhance', {str(src)!r}, '-o', {str(out)!r}, '--model', {weights!r}, '--precision', 'fp32'])\n")
    flag = tmp_path / "second-written"
    child = subprocess.Popen([sys.executable, "-c", code, str(flag)], cwd=ROOT)
    try:
        deadline = time.time() + 120
        while not flag.exists() and time.time() < deadline and child.poll() is None:
            time.sleep(0.1)
        assert flag.exists()
    finally:
        child.kill()
        child.wait()
    assert (out / "v0_sr.json").exists() and (out / "v1_sr.nii.gz").exists() and not (out / "v1_sr.json").exists()
    assert not (out / "v2_sr.nii.gz").exists()
    assert main(["enhance", str(src), "-o", str(out), "--model", weights, "--precision", "fp32"]) == 0
    status = {k.split("/")[-1]: r["status"] for k, r in summary(out).items()}
    assert status == {"v0.nii.gz": "up to date", "v1.nii.gz": "done", "v2.nii.gz": "done"}


def test_an_output_folder_inside_the_input_folder_is_not_read_as_input(tmp_path, save_tiny):
    src = tmp_path / "study"
    src.mkdir()
    small_lr(src / "a.nii.gz", k=2)
    argv = ["enhance", str(src), "-o", str(src / "enhanced"), "--model", str(save_tiny(tiny_model())),
            "--precision", "fp32"]
    assert main(argv) == 0 and main(argv) == 0
    assert [r["status"] for r in summary(src / "enhanced").values()] == ["up to date"]
    assert not list((src / "enhanced").glob("a_sr_sr*"))


def test_two_shards_cover_the_inputs_exactly_once(tmp_path):
    for i in range(5):
        small_lr(tmp_path / f"s{i}.nii.gz", k=1)
    items = discover([str(tmp_path)])
    parts = [in_shard(items, i, 2) for i in (1, 2)]
    names = [it.label for part in parts for it in part]
    assert sorted(names) == sorted(it.label for it in items) and len(set(names)) == 5
    assert shard_of("2/3") == (2, 3) and shard_of(None, {}) == (1, 1)
    assert shard_of(None, {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (2, 4)
    assert shard_of(None, {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5",
                           "SLURM_ARRAY_TASK_COUNT": "3"}) == (3, 3)
    with pytest.raises(MRSuperResError, match="I/N"):
        shard_of("two")
    with pytest.raises(MRSuperResError, match="does not exist"):
        shard_of("3/2")


def test_a_dicom_series_reads_as_its_nifti_and_enhances_in_a_batch(tmp_path, save_tiny):
    from MRSuperResLib.scans.dicom import find_series, read_series

    lr = small_lr(tmp_path / "lr.nii.gz", k=4)
    nifti = read_volume(lr)
    write_dicom_series(nifti, tmp_path / "in" / "series1", description="T1 MPRAGE")
    write_dicom_series(nifti, tmp_path / "in" / "ct", modality="CT")
    write_dicom_series(nifti, tmp_path / "in" / "scout", description="loc", image_type="ORIGINAL\\PRIMARY\\LOCALIZER")
    (series,) = find_series(tmp_path / "in" / "series1")
    volume = read_series(series)
    assert np.array_equal(volume.data, np.rint(nifti.data)) and np.allclose(volume.affine, nifti.affine, atol=1e-5)
    (multi,) = discover([str(write_multiframe(nifti, tmp_path / "mf" / "volume.dcm"))])   # one multi-frame file
    assert np.array_equal(multi.read().data, np.rint(nifti.data)) and np.allclose(multi.read().affine, nifti.affine,
                                                                                   atol=1e-5)
    small_lr(tmp_path / "in" / "plain.nii.gz", k=2)
    out = tmp_path / "out"
    assert main(["enhance", str(tmp_path / "in"), "-o", str(out), "--model", str(save_tiny(tiny_model())),
                 "--precision", "fp32"]) == 0
    rows = {r["output"].split("/")[-1]: r for r in summary(out).values()}
    assert rows["plain_sr.nii.gz"]["status"] == "done"
    assert rows["series1_T1_MPRAGE_sr.nii.gz"]["status"] == "done"
    assert "not MR" in rows["ct_T1_sample_sr.nii.gz"]["message"]
    assert "localizer" in rows["scout_loc_sr.nii.gz"]["message"]
    sr = read_volume(out / "series1" / "series1_T1_MPRAGE_sr.nii.gz")
    assert sr.data.shape == (nifti.data.shape[0] * 4, nifti.data.shape[1] * 4, 4)
    from MRSuperResLib.scans.geometry import resample_affine
    assert np.allclose(sr.affine, resample_affine(nifti.affine, 2, 4), atol=1e-4)


def test_a_bids_dataset_becomes_a_derivatives_dataset(tmp_path, save_tiny):
    root = tmp_path / "bids"
    (root / "sub-01" / "anat").mkdir(parents=True)
    (root / "sub-02" / "ses-1" / "anat").mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.9.0"}')
    small_lr(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz", k=2)
    small_lr(root / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_T2w.nii.gz", k=2)
    out = tmp_path / "derivatives" / "mrsuperres"
    assert main(["enhance", str(root), "-o", str(out), "--model", str(save_tiny(tiny_model())),
                 "--precision", "fp32"]) == 0
    assert (out / "sub-01" / "anat" / "sub-01_desc-superres_T1w.nii.gz").exists()
    assert (out / "sub-01" / "anat" / "sub-01_desc-superres_T1w.json").exists()
    assert (out / "sub-02" / "ses-1" / "anat" / "sub-02_ses-1_desc-superres_T2w.nii.gz").exists()
    assert json.loads((out / "dataset_description.json").read_text())["DatasetType"] == "derivative"


@pytest.mark.slow
def test_the_slicer_batch_script_takes_folders_and_dicom_and_resumes(tmp_path, save_tiny):
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    src = tmp_path / "in"
    src.mkdir()
    small_lr(src / "plain.nii.gz", k=2)
    write_dicom_series(read_volume(small_lr(tmp_path / "d.nii.gz", k=3)), src / "series", description="T1")
    weights = str(save_tiny(tiny_model()))
    argv = [sys.executable, str(ROOT / "scripts" / "slicer_enhance.py"), "--input", str(src), "--output",
            str(tmp_path / "out"), "--model", weights, "--axis", "2", "--consistency", "exact"]
    first = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    out = tmp_path / "out"
    assert (out / "plain_sr.nii.gz").exists() and (out / "plain_sr.json").exists()
    assert (out / "series" / "series_T1_sr.nii.gz").exists()
    assert json.loads((out / "plain_sr.json").read_text())["options"]["consistency"] == "exact"
    again = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("up to date") == 2, again.stdout + again.stderr
