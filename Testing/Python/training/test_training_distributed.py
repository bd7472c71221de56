"""`torchrun --nproc-per-node 2 -m MRSuperResLib train`: two gloo processes on the CPU train the
same generator as one process with the same global batch; only rank 0 writes; a killed run resumes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import ROOT, SAMPLE, write_nifti
from MRSuperResLib.cli import main
from MRSuperResLib.events import FINAL_EVENTS, read_events
from MRSuperResLib.models.weights import load_generator

TINY = ["--blocks", "1", "--features", "16", "--growth", "8", "--d-features", "16", "--batch", "4",
        "--patch", "32", "--precision", "fp32", "--log-every", "2", "--device", "cpu", "--init", "scratch"]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this torch has no gloo backend")


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    d = tmp_path_factory.mktemp("vols")
    data = nib.load(str(SAMPLE)).get_fdata(dtype=np.float32)
    return (write_nifti(d / "a.nii.gz", data[20:120, 30:130, 10:22]),
            write_nifti(d / "b.nii.gz", data[30:130, 40:140, 26:38]))


def torchrun(out, volumes, *extra, nproc=2):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "MRSuperResLib", "train", "--data", *map(str, volumes), "--out", str(out), *TINY, *map(str, extra)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and every process below it (torchrun starts its workers in their own groups)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    todo, tree = [pid], []
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
def test_two_processes_train_the_same_generator_as_one(tmp_path, volumes):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", "--data", *map(str, volumes), "--out", str(one), *TINY, "--iters", "6"]) == 0
    proc = torchrun(two, volumes, "--iters", "6")
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]
    a, _ = load_generator(one / "model.safetensors")
    b, card = load_generator(two / "model.safetensors")
    diff = max((x - y).abs().max().item() for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert diff < 1e-5                            # the same batches, gradients averaged: float rounding only
    assert card["world_size"] == 2
    events = read_events(two / "events.jsonl")
    assert [e["event"] for e in events].count("start") == 1 and events[-1]["event"] == "done"   # rank 0 only
    assert events[0]["world_size"] == 2
    assert output.count("two: done") == 1


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_and_its_model_enhances(tmp_path, volumes):
    out = tmp_path / "run"
    proc = torchrun(out, volumes, "--iters", "400", "--checkpoint-every", "4")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (out / "events.jsonl").exists() and any(e["event"] == "checkpoint"
                                                   for e in read_events(out / "events.jsonl")):
            break
        time.sleep(0.2)
    kill_tree(proc.pid)                           # torchrun and its workers, as a scheduler would
    proc.wait(timeout=30)
    killed = read_events(out / "events.jsonl")
    assert any(e["event"] == "checkpoint" for e in killed) and not [e for e in killed if e["event"] in FINAL_EVENTS]
    proc = torchrun(out, volumes, "--iters", "400", "--checkpoint-every", "4", "--resume")
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    events = read_events(out / "events.jsonl")
    assert [e for e in events if e["event"] == "resumed"] and events[-1]["event"] == "done"
    lr = write_nifti(tmp_path / "lr.nii.gz", np.random.default_rng(0).random((20, 24, 3)).astype(np.float32) * 90)
    assert main(["enhance", str(lr), "-o", str(tmp_path / "sr.nii.gz"), "--model", str(out / "model.safetensors"),
                 "--axis", "2", "--precision", "fp32"]) == 0
    assert nib.load(str(tmp_path / "sr.nii.gz")).shape == (80, 96, 3)
