"""Model cards (cards.py, weights.import_model) and the event log reader (events.py)."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_model, write_nifti
from MRSuperResLib.models import cards
from MRSuperResLib.cli import main
from MRSuperResLib.errors import MRSuperResError
from MRSuperResLib.events import EventLog, EventReader, final_event, read_events, start_event
from MRSuperResLib.files import sha256_of
from MRSuperResLib.training.data import VolumeInfo
from MRSuperResLib.models.weights import import_model, load_generator, save_model


def test_a_card_is_written_atomically_and_read_back(tmp_path):
    weights = tmp_path / "m.safetensors"
    assert cards.card_path(weights) == tmp_path / "m.json" and cards.read_card(weights) is None
    card = {"name": "m", "metrics": {"psnr": 30.5}, "training_data": None}
    cards.write_card(weights, card)
    assert cards.read_card(weights) == card
    assert (tmp_path / "m.json").read_text().endswith("}\n")
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]          # no partial file left behind
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(MRSuperResError, match="not valid JSON"):
        cards.read_card(weights)


def _expected_import_card(source, saved_path, model):
    """What `import-weights` wrote before cards.py: the loaded card, name, source, source_sha256,
    and save_model's fields."""
    return {"name": "imported", "scale": model.scale, "architecture": {"type": "RRDBNet", **model.config},
            "source": str(source.resolve()), "source_sha256": sha256_of(source),
            "parameters": sum(v.numel() for v in model.state_dict().values()),
            "sha256": sha256_of(saved_path), "file": saved_path.name,
            "training_data": None, "iterations": None, "metrics": None}


def test_import_model_from_pth_and_safetensors_writes_the_same_card_as_before(tmp_path):
    model = tiny_model(2)
    pth = tmp_path / "net.pth"
    torch.save({"params_ema": model.state_dict()}, pth)
    out = tmp_path / "imported.safetensors"
    saved = import_model(pth, out, "imported")
    assert saved == _expected_import_card(pth, out, model) == cards.read_card(out)
    # a .safetensors with a card keeps that card's record; the CLI writes the same card
    src = tmp_path / "trained.safetensors"
    save_model(model, src, {"training_data": "some scans", "iterations": 7, "description": "a run"})
    out2 = tmp_path / "cli" / "imported.safetensors"
    out2.parent.mkdir()
    assert main(["import-weights", str(src), "-o", str(out2)]) == 0
    card = cards.read_card(out2)
    expected = {**_expected_import_card(src, out2, model), "training_data": "some scans", "iterations": 7,
                "description": "a run"}
    assert card == expected and load_generator(out2)[1] == card
    assert import_model(src, tmp_path / "again.safetensors", "imported")["source_sha256"] == sha256_of(src)


def test_register_copy_keeps_the_weights_and_renames_the_card(tmp_path):
    src = tmp_path / "run" / "model.safetensors"
    src.parent.mkdir()
    saved = save_model(tiny_model(4), src, {"training_data": "x", "iterations": 3})
    target = cards.register_copy(src, tmp_path / "cache", "my-run")
    assert target == tmp_path / "cache" / "my-run.safetensors" and target.read_bytes() == src.read_bytes()
    _, card = load_generator(target)                     # its sha256 still matches
    assert card == {**saved, "name": "my-run"}


def test_provenance_is_kept_only_for_trained_models_and_fills_the_noise_range():
    assert cards.provenance({"name": "realesrgan", "iterations": None}) is None
    card = {"name": "a", "iterations": 10, "hr_noise": 0.5, "description": "not passed on", "sha256": "f" * 64}
    record = cards.provenance(card)
    assert record == {"name": "a", "iterations": 10, "hr_noise": 0.5, "sha256": "f" * 64,
                      "hr_noise_sigma": [0.005, 0.03]}
    assert cards.provenance({"iterations": 1})["hr_noise_sigma"] is None
    assert cards.noisy_target_losses("gan", 0.5).startswith("l1 only") and cards.noisy_target_losses("psnr", 0) is None


def test_training_card_is_the_card_a_training_run_exports(tmp_path, sample_volume):
    vol = write_nifti(tmp_path / "v.nii.gz", sample_volume[0][20:120, 30:130, 10:22])
    run = tmp_path / "run"
    assert main(["train", "--data", str(vol), "--out", str(run), "--iters", "2", "--blocks", "1", "--features", "16",
                 "--growth", "8", "--batch", "2", "--patch", "32", "--precision", "fp32", "--stage", "psnr",
                 "--hr-noise", "0.5", "--checkpoint-every", "2"]) == 0
    written = cards.read_card(run / "model.safetensors")
    start = start_event(read_events(run / "events.jsonl"))
    c = start["config"]
    rebuilt = cards.training_card(
        name="run", stage=c["stage"], preset=c["preset"], loss_weights=start["loss_weights"],
        gan_loss=start["gan_loss"], perceptual_network=start["vgg"], init=start["init"], init_provenance=None,
        init_discriminator=start["init_d"],
        training_volumes=[VolumeInfo(d["path"], tuple(d["shape"]), d["sha256"]) for d in written["training_data"]],
        validation_volumes=[], split=start["split"], degradations=written["degradations"], hr_noise=c["hr_noise"],
        hr_noise_sigma=c["hr_noise_sigma"], axis=c["axis"], patch=c["patch"], batch=c["batch"], iterations=2,
        target_iterations=c["iters"], stopped=None, learning_rate=start["lr"],
        learning_rate_schedule=start["lr_schedule"], ema_decay=c["ema_decay"], seed=c["seed"],
        device=written["device"], precision=start["precision"], wall_seconds=written["wall_seconds"],
        validation=written["metrics"]["validation"], scale=c["scale"], world_size=start["world_size"])
    from_weights = ("scale", "architecture", "parameters", "sha256", "file")
    assert rebuilt == {k: v for k, v in written.items() if k not in from_weights}
    assert rebuilt["hr_noise_sigma"] == [0.005, 0.03] and rebuilt["hr_noise_losses"] == "l1"
    assert list(rebuilt) == [k for k in written if k not in from_weights]          # same order on disk


def test_shipped_card_takes_the_run_record_and_the_scores():
    run_card = {"stage": "psnr", "iterations": 100, "wall_seconds": 10.0, "training_data": [{"sha256": "a"}],
                "init_provenance": {"iterations": 50, "wall_seconds": 5.0}, "weights": "EMA"}
    config = {"degrade": "bilinear", "hr_noise": 0.5, "axis": "all", "batch": 8, "patch": 96, "ema_decay": 0.999}
    table = {"m": {"psnr": 30.0, "ssim": 0.9, "vif": 0.5, "nrmse": 0.1}, "bicubic": {"psnr": 29.0, "ssim": 0.8,
                                                                                     "vif": 0.4, "nrmse": 0.2}}
    card = cards.shipped_card(run_card, config, name="m", learning_rate=1e-4, training_data=[{"file": "v"}],
                              validation={"volume": "val"}, table=table, partner="m-gan")
    assert card["metrics"] == {"psnr": 30.0, "ssim": 0.9, "vif": 0.5} and card["bicubic"]["vif"] == 0.4
    assert card["iterations_total"] == 150 and card["training_runs"] == 2 and card["detail_partner"] == "m-gan"
    assert card["hr_noise_sigma"] == [0.005, 0.03] and card["learning_rate_schedule"] == [[0, 1e-4]]
    assert card["loss_weights"] == {"l1_weight": 1.0} and "independent_check" not in card
    assert "consistency" not in card                                   # auto then anchors
    assert cards.shipped_card(run_card, config, name="m", learning_rate=1e-4, training_data=None,
                              validation={}, table=table, consistency="exact")["consistency"] == "exact"
    rescored = cards.scored_card(card, name="m", validation={"volume": "v2"}, table=table, independent=[{"x": 1}])
    assert rescored["validation"] == {"volume": "v2"} and rescored["independent_check"] == [{"x": 1}]


def test_event_reader_returns_only_complete_lines_and_picks_up_appended_ones(tmp_path):
    path = tmp_path / "events.jsonl"
    reader = EventReader(path)
    assert reader.read_new() == [] and read_events(path) == []          # no log yet
    log = EventLog(path)
    log.write("start", 0, config={"lr": 1})
    log.write("progress", 1, losses={"l1": float("nan")})
    first = reader.read_new()
    assert [e["event"] for e in first] == ["start", "progress"] and first[1]["losses"]["l1"] is None
    assert reader.read_new() == []                                      # nothing new
    log.write("done", 2, model="m.safetensors")
    log.close()
    assert [e["event"] for e in reader.read_new()] == ["done"]
    events = read_events(path)
    assert [e["event"] for e in events] == ["start", "progress", "done"]
    assert start_event(events)["config"] == {"lr": 1} and final_event(events)["event"] == "done"
    assert final_event(events[:2]) is None and start_event(events[1:]) is None


def test_a_half_written_line_waits_until_it_is_finished(tmp_path):
    path = tmp_path / "events.jsonl"
    line = json.dumps({"event": "progress", "iter": 3, "losses": {"l1": 0.25}})
    path.write_text(json.dumps({"event": "start", "iter": 0}) + "\n" + line[:10])
    reader = EventReader(path)
    assert [e["event"] for e in reader.read_new()] == ["start"]
    assert read_events(path) == [{"event": "start", "iter": 0}]
    with open(path, "a") as f:
        f.write(line[10:20])
    assert reader.read_new() == []                                      # still being written
    with open(path, "a") as f:
        f.write(line[20:] + "\n" + "not json\n")
    assert reader.read_new() == [json.loads(line)]                      # a broken line is skipped
    assert reader.read_new() == []
