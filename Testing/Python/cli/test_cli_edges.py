"""The ways out and the edges a new user hits: SIGTERM explains itself and removes the file being
written, a killed run's partial file is removed by the next, a full disk and a long name are the
machine's one line, a broken link in a folder is reported, libraries' warnings stay quiet, and -o
means what it says (a file for a DICOM file, a folder made where missing, maps beside the output)."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import ROOT, SAMPLE, tiny_model, write_nifti
from test_cohort import small_lr, summary

from MRSuperResLib.cli import main
from MRSuperResLib.scans.dicom_write import write_multiframe
from MRSuperResLib.scans.volumes import read_volume


def run_killed_while_writing(tmp_path, weights, out, sig: int):
    """`mrsuperres enhance` in a child that receives `sig` right after the output's partial file
    was written (inside the atomic write, before the rename)."""
    code = textwrap.dedent(f"""
        import os, signal, sys
        from MRSuperResLib.scans import volumes
        write = volumes._write_nifti
        def write_then_signal(*args):
            write(*args)
            os.kill(os.getpid(), {int(sig)})
        volumes._write_nifti = write_then_signal
        from MRSuperResLib.cli import main
        sys.exit(main(["enhance", {str(small_lr(tmp_path / "lr.nii.gz"))!r}, "-o", {str(out)!r},
                       "--model", {weights!r}, "--precision", "fp32"]))
    """)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def partials(folder):
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


def test_sigterm_while_writing_removes_the_partial_file_and_says_so(tmp_path, save_tiny):
    out = tmp_path / "out" / "sr.nii.gz"
    out.parent.mkdir()
    done = run_killed_while_writing(tmp_path, str(save_tiny(tiny_model())), out, signal.SIGTERM)
    assert done.returncode == 143, done.stderr
    assert done.stderr.strip().splitlines()[-1] == ("mrsuperres: terminated (SIGTERM); the file being written "
                                                    "was removed, finished outputs stay")
    assert not out.exists() and partials(out.parent) == []


def test_a_partial_file_left_by_a_killed_run_is_removed_by_the_next(tmp_path, save_tiny):
    out = tmp_path / "out" / "sr.nii.gz"
    out.parent.mkdir()
    weights = str(save_tiny(tiny_model()))
    killed = run_killed_while_writing(tmp_path, weights, out, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    left = partials(out.parent)
    assert len(left) == 1 and left[0].startswith(".sr.nii.gz.")           # what SIGKILL leaves
    assert main(["enhance", str(tmp_path / "lr.nii.gz"), "-o", str(out), "--model", weights,
                 "--precision", "fp32"]) == 0
    assert out.exists() and partials(out.parent) == []


def test_a_full_disk_during_training_is_one_line_with_exit_2(tmp_path, capsys, monkeypatch):
    data = np.asarray(__import__("nibabel").load(str(SAMPLE)).dataobj, dtype=np.float32)
    train = write_nifti(tmp_path / "a.nii.gz", data[20:84, 30:94, 10:14])
    run = tmp_path / "run"

    def full(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(f))
    monkeypatch.setattr(torch, "save", full)
    code = main(["train", "--data", str(train), "--out", str(run), "--iters", "2", "--blocks", "1", "--features",
                 "8", "--growth", "4", "--batch", "1", "--patch", "32", "--precision", "fp32", "--stage", "psnr",
                 "--checkpoint-every", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("mrsuperres: error: the disk is full: "), err
    assert not any("internal error" in line for line in err)


def test_an_output_name_of_247_characters_is_written(tmp_path, save_tiny):
    out = tmp_path / ("x" * 240 + ".nii.gz")
    assert len(out.name) == 247
    assert main(["enhance", str(small_lr(tmp_path / "lr.nii.gz")), "-o", str(out),
                 "--model", str(save_tiny(tiny_model())), "--precision", "fp32"]) == 0
    assert read_volume(out).data.shape == (148, 184, 3) and partials(tmp_path) == []


def test_a_broken_link_in_an_input_folder_gets_a_summary_line(tmp_path, save_tiny):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    small_lr(src / "a.nii.gz")
    os.symlink(tmp_path / "gone.nii.gz", src / "b.nii.gz")
    assert main(["enhance", str(src), "-o", str(out), "--model", str(save_tiny(tiny_model())),
                 "--precision", "fp32"]) == 1
    rows = summary(out)
    assert rows[str(src / "a.nii.gz")]["status"] == "done"
    assert rows[str(src / "b.nii.gz")]["status"] == "failed"
    assert "broken symbolic link" in rows[str(src / "b.nii.gz")]["message"]


def test_library_warnings_do_not_reach_the_user(tmp_path):
    data = np.full((32, 32, 4), 1e300)
    data[0, 0, 0] = 1.0
    path = tmp_path / "huge64.nii.gz"
    __import__("nibabel").save(__import__("nibabel").Nifti1Image(data, np.eye(4)), str(path))
    done = subprocess.run([sys.executable, "-m", "MRSuperResLib", "enhance", str(path), "-o",
                           str(tmp_path / "o.nii.gz")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"mrsuperres: error: {path} has 4095 NaN or infinite voxels (or "
                                                "values beyond float32): fix or mask them first"]


def test_a_single_dicom_file_with_a_file_output_writes_that_file(tmp_path, save_tiny):
    dicom = write_multiframe(read_volume(small_lr(tmp_path / "lr.nii.gz")), tmp_path / "one.dcm")
    out = tmp_path / "new" / "one.nii.gz"                    # in a folder that does not exist yet
    weights = str(save_tiny(tiny_model()))
    assert main(["enhance", str(dicom), "-o", str(out), "--model", weights, "--precision", "fp32"]) == 0
    assert out.is_file() and read_volume(out).data.shape == (148, 184, 3)
    small_lr(tmp_path / "b.nii.gz", k0=24)
    assert main(["enhance", str(dicom), str(tmp_path / "b.nii.gz"), "-o", str(tmp_path / "two.nii.gz"),
                 "--model", weights]) == 2
    assert not (tmp_path / "two.nii.gz").exists()


def test_maps_alone_go_beside_the_output(tmp_path, save_tiny, capsys):
    out = tmp_path / "sr.nii.gz"
    assert main(["enhance", str(small_lr(tmp_path / "lr.nii.gz")), "-o", str(out), "--maps",
                 "--model", str(save_tiny(tiny_model())), "--precision", "fp32"]) == 0
    assert (tmp_path / "sr_consistency.nii.gz").exists() and (tmp_path / "sr_uncertainty.nii.gz").exists()
    with pytest.raises(SystemExit):
        main(["enhance", "--help"])
    assert "through-plane both maps come at no extra pass" in " ".join(capsys.readouterr().out.split())


def test_an_unknown_model_lists_the_fetchable_one_too(tmp_path, capsys):
    assert main(["enhance", str(small_lr(tmp_path / "lr.nii.gz")), "-o", str(tmp_path / "o.nii.gz"),
                 "--model", "nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'nonexistent'" in err and "realesrgan-x4plus-gray" in err and "mri-x4-fidelity" in err


# ----------------------------------------------------------------------------- a fresh tester's findings

def test_a_sidecar_that_is_not_a_record_is_redone_not_a_crash(tmp_path, save_tiny):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    small_lr(src / "a.nii.gz")
    small_lr(src / "b.nii.gz", k0=24)
    run = ["enhance", str(src), "-o", str(out), "--model", str(save_tiny(tiny_model())), "--precision", "fp32"]
    assert main(run) == 0
    (out / "a_sr.json").write_text("[1, 2, 3]")
    assert main(run) == 0
    rows = summary(out)
    assert [rows[str(src / n)]["status"] for n in ("a.nii.gz", "b.nii.gz")] == ["done", "up to date"]


def test_an_output_folder_that_is_the_input_folder_or_a_folder_without_volumes_is_refused(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    small_lr(src / "a.nii.gz")
    assert main(["enhance", str(src), "-o", str(src)]) == 2
    assert "is the input folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no volume here")
    assert main(["enhance", str(empty), "-o", str(tmp_path / "out")]) == 2
    assert "no volume found in" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_slurm_arrays_with_a_step_map_onto_shards_and_bad_values_are_one_line():
    from MRSuperResLib.errors import MRSuperResError
    from MRSuperResLib.scans.cohort import shard_of

    step = {"SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_STEP": "3"}
    assert [shard_of(None, dict(step, SLURM_ARRAY_TASK_ID=t)) for t in ("1", "4", "7")] == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(MRSuperResError, match="SLURM_ARRAY_TASK_ID='x' is not a whole number"):
        shard_of(None, dict(step, SLURM_ARRAY_TASK_ID="x"))
    with pytest.raises(MRSuperResError, match="give --shard I/N"):
        shard_of(None, {"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2"})


def test_a_batch_stopped_by_sigterm_says_which_input_was_interrupted(tmp_path, save_tiny):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    small_lr(src / "a.nii.gz")
    small_lr(src / "b.nii.gz", k0=24)
    code = textwrap.dedent(f"""
        import os, signal, sys
        from MRSuperResLib.scans import volumes
        write, calls = volumes._write_nifti, []
        def write_then_signal(*args):
            write(*args)
            calls.append(1)
            if len(calls) == 2:                       # the second input's output
                os.kill(os.getpid(), signal.SIGTERM)
        volumes._write_nifti = write_then_signal
        from MRSuperResLib.cli import main
        sys.exit(main(["enhance", {str(src)!r}, "-o", {str(out)!r}, "--model", {str(save_tiny(tiny_model()))!r},
                       "--precision", "fp32"]))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 143, done.stderr
    rows = summary(out)
    assert [rows[str(src / n)]["status"] for n in ("a.nii.gz", "b.nii.gz")] == ["done", "interrupted"]
    assert partials(out) == []


def test_import_weights_refuses_to_overwrite_its_source_and_a_file_as_folder_is_named(tmp_path, save_tiny, capsys):
    weights = save_tiny(tiny_model())
    before = weights.read_bytes()
    assert main(["import-weights", str(weights), "-o", str(weights)]) == 2
    assert "is the input file" in capsys.readouterr().err and weights.read_bytes() == before
    lr = small_lr(tmp_path / "lr.nii.gz")
    assert main(["enhance", str(lr), "-o", str(lr / "x.nii.gz"), "--model", str(weights)]) == 2
    assert "lr.nii.gz is a file, not a folder" in capsys.readouterr().err
