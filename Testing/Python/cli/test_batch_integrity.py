"""A batch's outputs are its own and verified: names that cannot collide, decided before any work,
and a rerun that re-hashes what it would skip, so a truncated or replaced output is redone."""
from __future__ import annotations

import csv
import json

from conftest import tiny_model
from test_cohort import small_lr

from MRSuperResLib.cli import main
from MRSuperResLib.scans.cohort import discover
from MRSuperResLib.scans.volumes import read_volume, write_volume


def summary(out):
    with open(out / "mrsuperres_summary.tsv") as f:
        return {r["input"]: r for r in csv.DictReader(f, delimiter="\t")}


def test_inputs_whose_names_meet_get_distinct_outputs_and_a_rerun_skips_them_all(tmp_path, save_tiny, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    small_lr(src / "a.nii.gz")
    write_volume(read_volume(small_lr(tmp_path / "x.nii.gz", k0=24)), src / "a.nrrd")
    small_lr(src / "a_2.nii.gz", k0=28)
    names = [str(i.output) for i in discover([str(src)])]
    assert len({n.lower() for n in names}) == 3 and "a_2_sr.nii.gz" in names, names
    weights = str(save_tiny(tiny_model()))
    run = ["enhance", str(src), "-o", str(out), "--model", weights, "--precision", "fp32"]
    assert main(run) == 0
    rows = summary(out)
    assert [r["status"] for r in rows.values()] == ["done"] * 3
    outputs = {r["output"] for r in rows.values()}
    assert len(outputs) == 3 and all((out / o).name in {p.name for p in out.glob("*_sr.nii.gz")} for o in outputs)
    # each output holds its own input: the three inputs differ, so do the outputs
    means = {round(float(read_volume(o).data.mean()), 3) for o in outputs}
    assert len(means) == 3
    capsys.readouterr()
    assert main(run) == 0
    assert [r["status"] for r in summary(out).values()] == ["up to date"] * 3
    assert "0 to enhance" in capsys.readouterr().out


def test_a_truncated_replaced_or_unrecorded_output_is_redone(tmp_path, save_tiny):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name, k0 in (("a", 20), ("b", 24), ("c", 28)):
        small_lr(src / f"{name}.nii.gz", k0=k0)
    weights = str(save_tiny(tiny_model()))
    run = ["enhance", str(src), "-o", str(out), "--model", weights, "--precision", "fp32"]
    assert main(run) == 0
    side = json.loads((out / "a_sr.json").read_text())
    assert set(side["files"]) == {"a_sr.nii.gz"} and len(side["files"]["a_sr.nii.gz"]) == 64
    good = (out / "a_sr.nii.gz").read_bytes()
    (out / "a_sr.nii.gz").write_bytes(good[: len(good) // 2])                     # truncated
    (out / "b_sr.nii.gz").write_bytes((out / "c_sr.nii.gz").read_bytes())         # replaced by another output
    old = json.loads((out / "c_sr.json").read_text())
    del old["files"]                                                              # a sidecar without checksums
    (out / "c_sr.json").write_text(json.dumps(old))
    assert main(run) == 0
    rows = summary(out)
    assert [rows[str(src / f"{n}.nii.gz")]["status"] for n in "abc"] == ["done"] * 3
    assert (out / "a_sr.nii.gz").read_bytes() == good
    assert read_volume(out / "b_sr.nii.gz").data.mean() != read_volume(out / "c_sr.nii.gz").data.mean()
