"""Choosing the checkpoint to ship: scripts/maintainers/rank_checkpoints.py scores a run's checkpoints by the
shipping protocol on a subset of slices (evaluate's `every`), on a real tiny run over real MRI."""
from __future__ import annotations

import pytest

from MRSuperResLib.shipping import rank_checkpoints
from conftest import write_nifti
from MRSuperResLib.cli import main
from MRSuperResLib.errors import MRSuperResError
from MRSuperResLib.evaluation.protocol import evaluate


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, sample_volume):
    tmp = tmp_path_factory.mktemp("rank")
    data = sample_volume[0]
    train = write_nifti(tmp / "train.nii.gz", data[20:120, 30:130, 10:22])
    val = write_nifti(tmp / "val.nii.gz", data[20:84, 30:94, 22:31])
    run = tmp / "run"
    assert main(["train", "--data", str(train), "--val", str(val), "--out", str(run), "--iters", "4",
                 "--blocks", "1", "--features", "16", "--growth", "8", "--batch", "2", "--patch", "32",
                 "--precision", "fp32", "--stage", "psnr", "--checkpoint-every", "2", "--keep", "5"]) == 0
    return run, val


def test_every_scores_one_slice_in_n(tiny_run):
    _, val = tiny_run
    all_slices = evaluate([str(val)], None, scale=4, baselines=("bicubic",))
    some = evaluate([str(val)], None, scale=4, baselines=("bicubic",), every=2)
    assert (all_slices["n_slices"], some["n_slices"], some["every"]) == (9, 5, 2)
    assert some["methods"]["bicubic"]["psnr"]["mean"] != all_slices["methods"]["bicubic"]["psnr"]["mean"]
    with pytest.raises(MRSuperResError, match="every must be"):
        evaluate([str(val)], None, scale=4, every=0)


def test_rank_checkpoints_scores_ema_and_generator_best_first(tiny_run, capsys):
    run, val = tiny_run
    rank = rank_checkpoints
    rank.main([str(run), "--last", "2", "--every", "3", "--val", str(val)])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and ":" in line.split("|")[1]]
    assert sorted(r.split("|")[1].strip() for r in rows) == ["2:ema", "2:generator", "4:ema", "4:generator"]
    means = [float(r.split("|")[-2].split("/")[0]) for r in rows]
    assert means == sorted(means, reverse=True)
    best = rows[0].split("|")[1].strip().split(":")
    assert f"--checkpoint {best[0]} --weights {best[1]}" in out


def test_rank_checkpoints_refuses_bad_input_in_one_line(tiny_run, tmp_path):
    run, val = tiny_run
    rank = rank_checkpoints
    for argv, message in (([str(run), "--iters", "3", "--val", str(val)], "no checkpoint at iteration 3"),
                          ([str(tmp_path), "--val", str(val)], "no checkpoints"),
                          ([str(run), "--val", str(tmp_path / "gone.nii.gz")], "not found: "),
                          ([str(run), "--every", "0", "--val", str(val)], "--every must be at least 1"),
                          ([str(run), "--last", "0", "--val", str(val)], "--last must be at least 1")):
        with pytest.raises(SystemExit, match=message) as exc:
            rank.main(argv)
        assert "\n" not in str(exc.value.code)
    assert not list(tmp_path.iterdir())
