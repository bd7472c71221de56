"""Sizes are checked before memory is taken: a header against the file that must hold its voxels,
a detached NRRD header against where its data lies, an output (and --spacing) against a stated
limit and the machine's memory, each refused in one line that names the file and the figure."""
from __future__ import annotations

import gzip
import tracemalloc

import nibabel as nib
import numpy as np
import pytest
from conftest import write_nifti

import MRSuperResLib.cli.enhance  # noqa: F401 (imported before memory is traced)
from MRSuperResLib.cli import main
from MRSuperResLib.errors import MRSuperResError
from MRSuperResLib.scans import sizes
from MRSuperResLib.scans.volumes import read_volume

BIG = 100 * 2**20        # what a refusal may take at most


def peak_bytes(call) -> int:
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def refused(call, match):
    """The call's MRSuperResError, raised without taking BIG bytes."""
    errors = []

    def run():
        with pytest.raises(MRSuperResError, match=match) as info:
            call()
        errors.append(str(info.value))
    assert peak_bytes(run) < BIG
    return errors[0]


def test_a_76_byte_nifti_declaring_gigabytes_is_refused_by_its_length(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 4))
    header.set_data_dtype(np.uint8)
    path = tmp_path / "huge.nii.gz"
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4))
    assert path.stat().st_size < 100
    message = refused(lambda: read_volume(path), "declares 30000 x 30000 x 4 voxels")
    assert str(path) in message and "3.4 GB" in message and "memory" not in message


def test_a_truncated_raw_nifti_and_nrrd_are_refused_by_their_length(tmp_path):
    good = write_nifti(tmp_path / "v.nii", np.random.default_rng(0).random((64, 64, 32), dtype=np.float32))
    data = good.read_bytes()
    (tmp_path / "cut.nii").write_bytes(data[: len(data) // 3])
    refused(lambda: read_volume(tmp_path / "cut.nii"), r"declares 64 x 64 x 32 voxels \(0 GB|declares 64 x 64 x 32")
    (tmp_path / "d.nhdr").write_text("NRRD0004\ntype: float\ndimension: 3\nsizes: 400 400 400\nendian: little\n"
                                     "encoding: raw\ndata file: d.raw\n")
    (tmp_path / "d.raw").write_bytes(b"\0" * 1000)
    message = refused(lambda: read_volume(tmp_path / "d.nhdr"), "declares 400 x 400 x 400 voxels")
    assert "d.raw" in message and "1,000 bytes" in message


def test_a_detached_header_cannot_point_outside_its_folder(tmp_path):
    (tmp_path / "x.nhdr").write_text("NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 4 4\nencoding: raw\n"
                                     "data file: /etc/passwd\n")
    refused(lambda: read_volume(tmp_path / "x.nhdr"), "lies outside the header's folder")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "y.nhdr").write_text("NRRD0004\ntype: uint8\ndimension: 3\nsizes: 16 16 4\nencoding: raw\n"
                                             "space directions: (1,0,0) (0,1,0) (0,0,1)\ndata file: ../y.raw\n")
    (tmp_path / "y.raw").write_bytes(bytes(range(256)) * 4)
    refused(lambda: read_volume(tmp_path / "sub" / "y.nhdr"), "lies outside the header's folder")
    (tmp_path / "sub" / "y.raw").write_bytes(bytes(range(256)) * 4)                   # beside it: read
    (tmp_path / "sub" / "y.nhdr").write_text((tmp_path / "sub" / "y.nhdr").read_text().replace("../y.raw", "y.raw"))
    assert read_volume(tmp_path / "sub" / "y.nhdr").data.shape == (16, 16, 4)


def test_reading_more_than_the_memory_available_names_the_figures(tmp_path, monkeypatch):
    path = write_nifti(tmp_path / "v.nii.gz", np.random.default_rng(0).random((64, 64, 64), dtype=np.float32))
    monkeypatch.setattr(sizes, "available_memory", lambda: 2**20)
    message = refused(lambda: read_volume(path), "needs 2 MB of memory, 1 MB is available")
    assert str(path) in message and "64 x 64 x 64 voxels" in message


def test_a_spacing_far_too_fine_is_refused_at_the_plan_before_memory_is_taken(tmp_path, capsys):
    thick = write_nifti(tmp_path / "thick.nii.gz", np.random.default_rng(0).random((64, 64, 12), dtype=np.float32),
                        np.diag([1.0, 1.0, 4.0, 1.0]))
    args = ["enhance", str(thick), "-o", str(tmp_path / "out.nii.gz"), "--direction", "through-plane",
            "--spacing", "0.0001"]
    assert peak_bytes(lambda: main(args)) < BIG
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mrsuperres: error: the target spacing 0.0001 mm is 40000x finer than the slice spacing 4 mm: "
                   "at most 32x (0.125 mm)"], err
    assert not (tmp_path / "out.nii.gz").exists()


def test_an_output_larger_than_the_memory_available_is_refused_at_the_plan(tmp_path, capsys, monkeypatch):
    thick = write_nifti(tmp_path / "thick.nii.gz", np.random.default_rng(0).random((64, 64, 12), dtype=np.float32),
                        np.diag([1.0, 1.0, 4.0, 1.0]))
    monkeypatch.setattr(sizes, "available_memory", lambda: 2**20)
    assert main(["enhance", str(thick), "-o", str(tmp_path / "out.nii.gz"), "--direction", "through-plane",
                 "--spacing", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mrsuperres: error: the output of 64 x 64 x 96 voxels needs 2 MB of memory, 1 MB is available "
                   "(--spacing 0.5 mm is too fine?)"], err
    monkeypatch.setattr(sizes, "MAX_OUTPUT_BYTES", 2**19)
    monkeypatch.setattr(sizes, "available_memory", lambda: None)             # Windows: the limit still holds
    assert main(["enhance", str(thick), "-o", str(tmp_path / "out.nii.gz"), "--direction", "through-plane"]) == 2
    assert capsys.readouterr().err.strip() == ("mrsuperres: error: the output of 64 x 64 x 48 voxels would be 768 KB, "
                                               "over MRSuperRes's limit of 512 KB")
    assert not (tmp_path / "out.nii.gz").exists()


def test_the_plan_line_states_the_type_the_file_will_hold(tmp_path, capsys, save_tiny):
    from conftest import tiny_model

    data = (np.random.default_rng(0).random((32, 32, 3)) * 1000).astype(np.int16)
    src = tmp_path / "int16.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([4.0, 4.0, 1.0, 1.0])), str(src))
    out = tmp_path / "sr.nii.gz"
    assert main(["enhance", str(src), "-o", str(out), "--model", str(save_tiny(tiny_model())), "--dtype", "input",
                 "--precision", "fp32"]) == 0
    plan = [line for line in capsys.readouterr().err.splitlines() if "voxels of" in line][0]
    assert "as int16" in plan and nib.load(str(out)).get_data_dtype() == np.int16
