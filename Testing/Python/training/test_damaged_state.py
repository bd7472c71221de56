"""Damaged state is refused or reported, never used silently (issue 36): weights holding NaN/inf,
a corrupt newest training checkpoint, and an event log whose last line a killed writer left half."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import SAMPLE, tiny_model, write_nifti
from MRSuperResLib.cli import main
from MRSuperResLib.errors import MRSuperResError
from MRSuperResLib.events import EventLog, EventReader, read_events
from MRSuperResLib.models.checkpoints import list_checkpoints
from MRSuperResLib.models.weights import import_model, load_generator, save_model


# ----------------------------------------------------------------------------- NaN/inf weights

def broken_model():
    """A tiny x4 network with one NaN and one inf weight, in two tensors."""
    model = tiny_model(4)
    with torch.no_grad():
        model.conv_last.bias.fill_(float("nan"))
        model.body[0].rdb1.conv1.weight[0, 0, 1, 1] = float("inf")
    return model


@pytest.mark.parametrize("kind", ["safetensors", "pth"])
def test_import_refuses_non_finite_weights_and_writes_nothing(tmp_path, kind):
    model = broken_model()
    src_dir, out_dir = tmp_path / "src", tmp_path / "out"
    src_dir.mkdir()
    out_dir.mkdir()
    if kind == "safetensors":
        source = src_dir / "broken.safetensors"
        save_model(model, source, {})
    else:
        source = src_dir / "broken.pth"
        torch.save({"params_ema": model.state_dict()}, str(source))
    total = len(model.state_dict())
    expected = (f"{source}: 2 of {total} weight tensors hold NaN or infinite values "
                "(body.0.rdb1.conv1.weight, conv_last.bias)")
    with pytest.raises(MRSuperResError) as caught:
        import_model(source, out_dir / "imported.safetensors", "imported")
    assert str(caught.value).startswith(expected) and "\n" not in str(caught.value)
    assert list(out_dir.iterdir()) == []                    # no model, no card, no temporary file
    # the same check refuses them wherever weights are loaded (enhance, evaluate, --init)
    with pytest.raises(MRSuperResError, match="NaN or infinite values"):
        load_generator(source)


def test_import_weights_command_says_so_in_one_line(tmp_path, capsys):
    source = tmp_path / "broken.safetensors"
    save_model(broken_model(), source, {})
    out = tmp_path / "out"
    out.mkdir()
    assert main(["import-weights", str(source), "-o", str(out / "x.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"mrsuperres: error: {source}: 2 of ")
    assert "conv_last.bias" in err[0] and list(out.iterdir()) == []
    # a finite model still imports
    good = tmp_path / "good.safetensors"
    save_model(tiny_model(4), good, {})
    assert main(["import-weights", str(good), "-o", str(out / "x.safetensors")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["x.json", "x.safetensors"]


# ----------------------------------------------------------------------------- corrupt checkpoint

TINY = ["--blocks", "1", "--features", "8", "--growth", "4", "--batch", "1", "--patch", "32",
        "--precision", "fp32", "--log-every", "2", "--stage", "psnr", "--checkpoint-every", "2"]


def tiny_run(tmp_path):
    """A 4-iteration run with checkpoints at 2 and 4 on real MRI; (run folder, its train argv)."""
    data = np.asarray(__import__("nibabel").load(str(SAMPLE)).dataobj, dtype=np.float32)
    train = write_nifti(tmp_path / "a.nii.gz", data[20:84, 30:94, 10:14])
    val = write_nifti(tmp_path / "b.nii.gz", data[30:94, 40:104, 26:28])
    run = tmp_path / "run"
    args = ["train", "--data", str(train), "--val", str(val), "--out", str(run), *TINY]
    assert main([*args, "--iters", "4"]) == 0
    return run, args


def test_resume_past_a_corrupt_checkpoint_names_both_files_on_stderr(tmp_path, capsys):
    run, args = tiny_run(tmp_path)
    newest, previous = list_checkpoints(run)[:2]
    assert (newest.name, previous.name) == ("ckpt_00000004.pt", "ckpt_00000002.pt")
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])       # truncated
    capsys.readouterr()
    assert main([*args, "--iters", "6", "--resume"]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if str(newest) in line]
    assert len(said) == 1 and said[0].startswith("mrsuperres: warning: checkpoint ")
    assert said[0].endswith("; using ckpt_00000002.pt (iteration 2) instead")
    events = read_events(run / "events.jsonl")
    assert [e["message"] for e in events if e["event"] == "warning"] == [said[0][len("mrsuperres: warning: "):]]
    assert [e["iter"] for e in events if e["event"] == "resumed"] == [2]


# ----------------------------------------------------------------------------- half-written event line

def test_an_event_after_a_half_written_line_starts_a_line_of_its_own(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.write("start", 0)
    log.write("progress", 2, losses={"l1": 0.5})
    log.close()
    reader = EventReader(path)
    assert [e["event"] for e in reader.read_new()] == ["start", "progress"]
    whole = json.dumps({"event": "progress", "iter": 4, "losses": {"l1": 0.25}})
    with open(path, "a", encoding="utf-8") as f:                 # a writer killed in the middle of a line
        f.write(whole[:25])
    assert reader.read_new() == [] and len(read_events(path)) == 2
    log = EventLog(path)                                         # the --resume that follows
    log.write("resumed", 2)
    log.close()
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[2] == whole[:25] and json.loads(lines[3])["event"] == "resumed" and lines[4] == ""
    assert [e["event"] for e in reader.read_new()] == ["resumed"]            # the fragment is skipped
    assert [e["event"] for e in read_events(path)] == ["start", "progress", "resumed"]
    # a log that ends in a newline, or does not exist yet, gets no blank line
    fresh = tmp_path / "fresh.jsonl"
    for _ in range(2):
        log = EventLog(fresh)
        log.write("start", 0)
        log.close()
    assert fresh.read_text(encoding="utf-8").count("\n") == 2 and "\n\n" not in fresh.read_text(encoding="utf-8")


def test_a_checkpoint_with_non_finite_weights_is_skipped_like_a_corrupt_one(tmp_path, capsys):
    """Bytes changed into NaN inside the newest checkpoint's generator: resume falls back to the
    previous one and says so, instead of blaming the learning rate for a divergence."""
    import torch

    run, args = tiny_run(tmp_path)
    newest = list_checkpoints(run)[0]
    state = torch.load(str(newest), weights_only=True)
    state["generator"]["conv_first.weight"].view(-1)[:4] = float("nan")
    torch.save(state, str(newest))
    capsys.readouterr()
    assert main([*args, "--iters", "6", "--resume"]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if str(newest) in line]
    assert len(said) == 1 and "NaN or infinite" in said[0] and "using ckpt_00000002.pt" in said[0]
