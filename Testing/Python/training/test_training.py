"""`mrsuperres train`: learning, resume = uninterrupted, stop, kill, events, bad input."""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import ROOT, SAMPLE, tiny_model, write_nifti
from MRSuperResLib.models.checkpoints import list_checkpoints, load_latest
from MRSuperResLib.cli import main
from MRSuperResLib.models.rrdbnet import RRDBNet
from MRSuperResLib.events import FINAL_EVENTS, read_events

TINY = ["--blocks", "1", "--features", "16", "--growth", "8", "--d-features", "16", "--batch", "2",
        "--patch", "32", "--precision", "fp32", "--log-every", "2"]


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    d = tmp_path_factory.mktemp("vols")
    data = nib.load(str(SAMPLE)).get_fdata(dtype=np.float32)
    a = write_nifti(d / "a.nii.gz", data[20:120, 30:130, 10:22])
    b = write_nifti(d / "b.nii.gz", data[30:130, 40:140, 26:38])
    return a, b


def train_args(out, data, *extra):
    return ["train", "--data", *map(str, data), "--out", str(out), *TINY, *map(str, extra)]


def losses(events, key="l1"):
    return [e["losses"][key] for e in events if e["event"] == "progress"]


def test_l1_falls_when_overfitting_one_slice(tmp_path, sample_volume):
    data = sample_volume[0]
    one = np.repeat(data[30:94, 40:104, 24:25], 6, axis=2)              # one real slice, six times
    vol = write_nifti(tmp_path / "one.nii.gz", one)
    out = tmp_path / "run"
    assert main(train_args(out, [vol], "--iters", "80", "--lr", "2e-3", "--checkpoint-every", "80",
                           "--stage", "psnr")) == 0
    events = read_events(out / "events.jsonl")
    l1 = losses(events)
    assert all(np.isfinite(l1)) and len(l1) == 40
    assert np.mean(l1[-5:]) < 0.6 * np.mean(l1[:5])
    card = json.loads((out / "model.json").read_text())
    assert card["stage"] == "psnr" and card["iterations"] == 80 and card["training_data"][0]["sha256"]


@pytest.mark.slow
def test_resume_reproduces_an_uninterrupted_gan_run(tmp_path, volumes):
    full, split = tmp_path / "full", tmp_path / "split"
    args = ["--stage", "gan", "--checkpoint-every", "4", "--axis", "all", "--degrade", "bilinear,mri,kspace"]
    assert main(train_args(full, volumes, "--iters", "12", *args)) == 0
    assert main(train_args(split, volumes, "--iters", "8", *args)) == 0
    assert main(train_args(split, volumes, "--iters", "12", "--resume", *args)) == 0
    a = torch.load(str(list_checkpoints(full)[0]), weights_only=True)
    b = torch.load(str(list_checkpoints(split)[0]), weights_only=True)
    assert a["iter"] == b["iter"] == 12
    for part in ("generator", "ema", "discriminator"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert losses(read_events(full / "events.jsonl"))[-1] == losses(read_events(split / "events.jsonl"))[-1]
    kinds = [e["event"] for e in read_events(split / "events.jsonl")]
    assert kinds[0] == "start" and "resumed" in kinds and kinds.count("done") == 2
    assert len(list_checkpoints(full)) == 3                                   # --keep 3


def test_resume_with_a_lower_learning_rate(tmp_path, volumes):
    run, (a, b) = tmp_path / "run", volumes
    common = ["--val", b, "--stage", "psnr", "--checkpoint-every", "4"]
    assert main(train_args(run, [a], "--iters", "4", "--lr", "1e-3", *common)) == 0
    # a run from before --hr-noise-sigma existed resumes; one with another noise range does not
    path = list_checkpoints(run)[-1]
    state = torch.load(path, weights_only=True)
    del state["config"]["hr_noise_sigma"]
    torch.save(state, path)
    assert main(train_args(run, [a], "--iters", "8", "--resume", "--hr-noise-sigma", "0.01,0.02", *common)) == 2
    assert main(train_args(run, [a], "--iters", "8", "--lr", "2.5e-4", "--resume", *common)) == 0
    events = read_events(run / "events.jsonl")
    assert [e["lr"] for e in events if e["event"] == "progress"] == [1e-3, 1e-3, 2.5e-4, 2.5e-4]
    state, _ = load_latest(run)
    assert state["opt_g"]["param_groups"][0]["lr"] == 2.5e-4           # not the rate saved with Adam's state
    assert state["lr_schedule"] == [[0, 1e-3], [4, 2.5e-4]]
    card = json.loads((run / "model.json").read_text())
    assert card["learning_rate_schedule"] == [[0, 1e-3], [4, 2.5e-4]] and card["learning_rate"] == 2.5e-4
    # validation scores the raw generator beside the EMA (which barely moves in 8 iterations)
    last = [e for e in events if e["event"] == "validation"][-1]
    assert {"model", "generator", "bicubic"} <= set(last)
    assert last["generator"]["psnr"] != last["model"]["psnr"]


def check_schema(events):
    assert events and all({"event", "iter", "time"} <= set(e) for e in events)
    allowed = {"start", "resumed", "warning", "progress", "validation", "checkpoint"} | set(FINAL_EVENTS)
    assert {e["event"] for e in events} <= allowed
    assert events[0]["event"] == "start" and events[-1]["event"] in FINAL_EVENTS
    for e in events:
        if e["event"] == "progress":
            assert {"losses", "lr", "its_per_sec", "eta_seconds", "iters"} <= set(e)
        if e["event"] == "validation":
            for side in ("model", "bicubic"):
                assert set(e[side]) == {"ssim", "psnr", "vif"}
                assert 0 < e[side]["vif"] < 2 and 0 < e[side]["ssim"] <= 1
        if e["event"] == "checkpoint":
            assert os.path.basename(e["path"]).startswith("ckpt_")


def launch(out, data, *extra):
    cmd = [sys.executable, "-m", "MRSuperResLib", *train_args(out, data, *extra)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path, event, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        for e in read_events(path):
            if e["event"] == event:
                return e
        time.sleep(0.05)
    raise AssertionError(f"no {event} event within {timeout} s")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["stop file", "signal"])
def test_stop_checkpoints_and_resume_goes_on(tmp_path, volumes, how):
    out = tmp_path / "run"
    proc = launch(out, volumes, "--iters", "100000", "--checkpoint-every", "100000", "--stage", "gan")
    wait_for(out / "events.jsonl", "progress")
    if how == "stop file":
        (out / "STOP").write_text("")
    else:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 3, proc.stderr.read()
    events = read_events(out / "events.jsonl")
    check_schema(events)
    last = events[-1]
    assert last["event"] == "stopped" and last["reason"] == how
    assert (out / "model.safetensors").exists() and list_checkpoints(out)
    stopped_at = last["iter"]
    assert main(train_args(out, volumes, "--iters", stopped_at + 4, "--checkpoint-every", "100000",
                           "--stage", "gan", "--resume")) == 0
    events = read_events(out / "events.jsonl")
    resumed = [e for e in events if e["event"] == "resumed"]
    assert resumed[0]["iter"] == stopped_at and events[-1]["event"] == "done" and events[-1]["iter"] == stopped_at + 4


@pytest.mark.slow
def test_sigkill_after_first_checkpoint_then_resume_and_enhance(tmp_path, volumes):
    out = tmp_path / "run"
    proc = launch(out, volumes, "--iters", "60", "--checkpoint-every", "5", "--stage", "gan")
    first = wait_for(out / "events.jsonl", "checkpoint")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed = read_events(out / "events.jsonl")
    assert not [e for e in killed if e["event"] in FINAL_EVENTS]
    assert main(train_args(out, volumes, "--iters", "60", "--checkpoint-every", "5", "--stage", "gan",
                           "--resume")) == 0
    events = read_events(out / "events.jsonl")
    resumed = [e for e in events if e["event"] == "resumed"][0]
    assert resumed["iter"] >= first["iter"] > 0
    assert events[-1]["event"] == "done" and events[-1]["iter"] == 60
    check_schema(events)
    lr = write_nifti(tmp_path / "lr.nii.gz", np.random.default_rng(0).random((20, 24, 3)).astype(np.float32) * 90)
    assert main(["enhance", str(lr), "-o", str(tmp_path / "sr.nii.gz"), "--model", str(out / "model.safetensors"),
                 "--axis", "2"]) == 0
    assert nib.load(str(tmp_path / "sr.nii.gz")).shape == (80, 96, 3)


@pytest.mark.slow
def test_checkpoints_survive_a_kill_during_saving_and_corruption(tmp_path, volumes):
    run = tmp_path / "run"
    assert main(train_args(run, volumes, "--iters", "8", "--checkpoint-every", "4")) == 0
    good = list_checkpoints(run)
    assert [p.name for p in good] == ["ckpt_00000008.pt", "ckpt_00000004.pt"]
    # a process killed while writing checkpoint 12 leaves only a hidden partial file
    script = (
        "import os, signal, torch, sys\n"
        "from MRSuperResLib.models import checkpoints\n"
        "real = torch.save\n"
        "def dying(obj, f, *a, **k):\n"
        "    f.write(b'PK\\x03\\x04' + os.urandom(5000)); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
        "torch.save = dying\n"
        f"checkpoints.save_checkpoint(__import__('pathlib').Path({str(run)!r}), 12, {{'x': torch.zeros(3)}})\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT)
    assert proc.returncode == -signal.SIGKILL
    assert [p.name for p in list_checkpoints(run)] == ["ckpt_00000008.pt", "ckpt_00000004.pt"]
    assert list((run / "checkpoints").glob(".ckpt_*.partial"))
    state, path = load_latest(run)
    assert state["iter"] == 8
    # a corrupt newest checkpoint: resume falls back to the previous one, with a warning
    newest = good[0]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    assert main(train_args(run, volumes, "--iters", "10", "--checkpoint-every", "4", "--resume")) == 0
    events = read_events(run / "events.jsonl")
    warning = [e for e in events if e["event"] == "warning"]
    assert warning and "ckpt_00000008.pt" in warning[0]["message"]
    assert [e for e in events if e["event"] == "resumed"][0]["iter"] == 4
    assert not list((run / "checkpoints").glob(".ckpt_*.partial"))


def test_config_file_and_flags(tmp_path, volumes):
    cfg = tmp_path / "train.toml"
    cfg.write_text(f'data = ["{volumes[0]}", "{volumes[1]}"]\niters = 3\nlog-every = 1\ncheckpoint_every = 50\n'
                   'stage = "psnr"\nblocks = 1\nfeatures = 16\ngrowth = 8\npatch = 32\nbatch = 1\n'
                   'precision = "fp32"\nhr-noise = 0.5\nhr-noise-sigma = [0.001, 0.002]\n')
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--iters", "4"]) == 0
    start = read_events(out / "events.jsonl")[0]
    assert start["config"]["iters"] == 4 and start["config"]["blocks"] == 1 and start["split"] == "80/20 by volume"
    assert start["config"]["hr_noise_sigma"] == [0.001, 0.002]
    assert read_events(out / "events.jsonl")[-1]["iter"] == 4
    bad = tmp_path / "bad.toml"
    bad.write_text("itres = 3\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "x")]) == 2


def test_bad_input_leaves_the_run_folder_as_it_was(tmp_path, volumes, capsys, save_tiny):
    a, b = volumes
    flat2d = write_nifti(tmp_path / "flat.nii.gz", np.random.rand(40, 40))
    small = write_nifti(tmp_path / "small.nii.gz", np.random.rand(20, 20, 6))
    x2 = save_tiny(tiny_model(2), "x2")
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [
        (["train", "--out", str(tmp_path / "r1")], "no training volumes"),
        (train_args(tmp_path / "r2", [tmp_path / "missing.nii.gz"]), "file not found"),
        (train_args(tmp_path / "r3", [flat2d]), "2D image"),
        (train_args(afile, [a]), "not a folder"),
        (train_args(tmp_path / "no" / "r4", [a]), "does not exist"),
        (train_args(tmp_path / "r5", [a], "--init", x2, "--scale", "1", "--degrade", "thick"),
         "is x2, but --scale 1"),
        (train_args(tmp_path / "r5b", [a], "--init", x2, "--scale", "2", "--input-skip"), "has no input skip"),
        (train_args(tmp_path / "r5c", [a], "--init", x2, "--scale", "2", "--supersample", "2"),
         "--supersample 2 differs from the --init model's 1"),
        (["train", "--data", str(a), "--out", str(tmp_path / "r5d"), "--init", str(x2), "--patch", "32",
          "--blocks", "1", "--features", "8"], "--features 8 is smaller than the --init model's 16"),
        (train_args(tmp_path / "r6", [a], "--resume"), "no valid checkpoint"),
        (train_args(tmp_path / "r7", [small]), "patch size"),
        (train_args(tmp_path / "r8", [a], "--patch", "36"), "multiple of 8"),
    ]
    for argv, message in cases:
        before = sorted(p.name for p in tmp_path.iterdir())
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)
        assert sorted(p.name for p in tmp_path.iterdir()) == before, argv
    # an existing run is not overwritten without --resume
    run = tmp_path / "run"
    assert main(train_args(run, [a, b], "--iters", "2", "--checkpoint-every", "5")) == 0
    listing = sorted(p.name for p in run.rglob("*"))
    events = (run / "events.jsonl").read_text()
    assert main(train_args(run, [a, b], "--iters", "2")) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert main(train_args(run, [a, b], "--iters", "4", "--blocks", "2", "--resume")) == 2
    assert "blocks" in capsys.readouterr().err
    assert sorted(p.name for p in run.rglob("*")) == listing and (run / "events.jsonl").read_text() == events


@pytest.mark.slow
def test_initialisation_from_runs_checkpoints_and_realesrgan(tmp_path, volumes, default_model_path):
    first = tmp_path / "first"
    assert main(train_args(first, volumes, "--iters", "2", "--stage", "gan", "--checkpoint-every", "5")) == 0
    ckpt = list_checkpoints(first)[0]
    second = tmp_path / "second"
    assert main(["train", "--data", *map(str, volumes), "--out", str(second), "--init", str(first),
                 "--init-d", str(ckpt), "--stage", "gan", "--iters", "1", "--batch", "1", "--patch", "32",
                 "--d-features", "16", "--precision", "fp32"]) == 0
    start = read_events(second / "events.jsonl")[0]
    assert start["architecture"]["num_block"] == 1 and start["init_d"] == str(ckpt)
    assert json.loads((second / "model.json").read_text())["init"].startswith("first (sha256")
    third = tmp_path / "third"
    assert main(["train", "--data", *map(str, volumes), "--out", str(third), "--init", "realesrgan",
                 "--stage", "psnr", "--iters", "1", "--batch", "1", "--patch", "32", "--precision", "fp32"]) == 0
    card = json.loads((third / "model.json").read_text())
    assert card["architecture"]["num_block"] == 23 and card["init"].startswith("realesrgan-x4plus-gray")


def test_an_x2_run_supersampled_from_an_x4_model_starts_as_it_and_ships_its_factor(tmp_path, volumes, save_tiny):
    """--scale 2 --supersample 2 --init X4 takes every weight of the x4 model; the run's model file
    is an x2 model whose card and weights say supersample 2."""
    from MRSuperResLib.models.weights import load_generator

    x4 = tiny_model(4)
    run = tmp_path / "x2"
    assert main(train_args(run, volumes, "--init", save_tiny(x4, "x4"), "--scale", "2", "--supersample", "2",
                           "--iters", "1", "--lr", "1e-12")) == 0
    model, card = load_generator(run / "model.safetensors")
    assert model.scale == 2 and card["architecture"]["supersample"] == 2 and \
        "every weight of the x4 network, supersampled x2" in card["init"]
    x = torch.rand(1, 1, 12, 12)
    with torch.no_grad():                     # a learning rate of 1e-12: still the x4 network, averaged 2x2
        assert torch.allclose(model(x), torch.nn.functional.avg_pool2d(x4(x), 2), atol=1e-4)


def test_a_run_grown_from_a_model_starts_as_it(tmp_path, volumes, save_tiny):
    """--init MODEL with more --blocks/--features/--growth than it has: the run starts from the
    same function (models/grow) and its card says so."""
    from MRSuperResLib.models.weights import load_generator

    torch.manual_seed(3)
    x1 = RRDBNet(1, 1, scale=1, num_feat=16, num_block=1, num_grow_ch=8, input_skip=True).eval()
    with torch.no_grad():
        for p in x1.parameters():
            p.add_(0.05 * torch.randn_like(p))
    run = tmp_path / "grown"
    assert main(["train", "--data", *map(str, volumes), "--out", str(run), "--init", str(save_tiny(x1, "x1")),
                 "--scale", "1", "--degrade", "thick", "--blocks", "2", "--features", "24", "--iters", "1",
                 "--batch", "1", "--patch", "32", "--precision", "fp32", "--lr", "1e-12"]) == 0
    model, card = load_generator(run / "model.safetensors")
    assert card["architecture"]["num_block"] == 2 and card["architecture"]["num_feat"] == 24
    assert "grown to 2 blocks, 24 features, 8 growth channels" in card["init"]
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model(x), x1(x), atol=1e-4)


def test_gan_losses_and_discriminator_skip_targets_given_hr_noise(tmp_path, volumes):
    """L1 trains on every sample; perceptual, adversarial and the discriminator only on clean targets."""
    from MRSuperResLib.cli.commands import build_parser
    from MRSuperResLib.training.loop import Trainer
    from MRSuperResLib.training.config import TrainConfig, build_config

    args = build_parser().parse_args(train_args(tmp_path / "never", volumes, "--stage", "gan", "--hr-noise", "0.5"))
    trainer = Trainer(build_config({k: getattr(args, k) for k in TrainConfig.option_names() if hasattr(args, k)}),
                      progress_bar=False)
    trainer.prepare()
    trainer._build_training_state()                  # networks and optimisers; writes nothing
    trainer.discriminator.eval()                     # spectral norm: no power-iteration update per call
    g = torch.Generator().manual_seed(0)
    sr = torch.rand(3, 1, 32, 32, generator=g, requires_grad=True)
    hr = torch.rand(3, 1, 32, 32, generator=g)
    clean = torch.tensor([True, False, True])
    mixed = trainer.generator_losses(sr, hr, clean)
    subset = trainer.generator_losses(sr[clean], hr[clean])
    assert set(mixed) == {"l1", "perceptual", "gan_g"}
    assert float(mixed["l1"].detach()) == pytest.approx(float((sr - hr).abs().mean().detach()))       # all three samples
    for key in ("perceptual", "gan_g"):
        m, s = float(mixed[key].detach()), float(subset[key].detach())
        assert m == pytest.approx(s, rel=1e-5) and m > 0
        (grad,) = torch.autograd.grad(mixed[key], sr, retain_graph=True)
        assert grad[1].abs().max() == 0 and grad[0].abs().max() > 0                # the noisy one is untouched
    assert set(trainer.generator_losses(sr, hr, torch.zeros(3, dtype=torch.bool))) == {"l1"}

    trainer.discriminator.train()
    lr_b = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)
    hr_b = np.random.default_rng(1).random((2, 1, 32, 32), dtype=np.float32)
    parts = ("generator", "ema", "discriminator", "opt_g", "opt_d")
    start = {p: copy.deepcopy(getattr(trainer, p).state_dict()) for p in parts}
    losses = trainer._step(lr_b, hr_b, noisy=np.array([True, True]))        # all noisy: L1 only, D untouched
    assert set(losses) == {"l1", "total_g"} and losses["l1"] > 0
    assert all(torch.equal(start["discriminator"][k], v) for k, v in trainer.discriminator.state_dict().items())
    # one noisy, one clean: the discriminator learns exactly what it learns from the clean one alone
    for p in parts:
        getattr(trainer, p).load_state_dict(copy.deepcopy(start[p]))
    trainer._step(lr_b, hr_b, noisy=np.array([True, False]))
    mixed = copy.deepcopy(trainer.discriminator.state_dict())
    for p in parts:
        getattr(trainer, p).load_state_dict(copy.deepcopy(start[p]))
    trainer._step(lr_b[1:], hr_b[1:])
    alone = trainer.discriminator.state_dict()
    assert not all(torch.equal(start["discriminator"][k], v) for k, v in mixed.items())
    assert all(torch.allclose(mixed[k], alone[k], atol=1e-6) for k in mixed)
