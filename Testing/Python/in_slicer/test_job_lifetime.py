"""A job's life when Slicer ends: quitting asks every job to stop and gives a training the time to
write its checkpoint, which the run resumes from; a Slicer that is killed leaves no job running
(the child notices within seconds, a training checkpoints first) and no job folder behind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import nibabel as nib
import numpy as np
import pytest
from conftest import ROOT, SAMPLE, write_nifti

from MRSuperResLib.events import EventReader
from MRSuperResLib.files import process_alive

TINY = ["--stage", "psnr", "--batch", "2", "--patch", "32", "--blocks", "1", "--features", "8", "--growth", "4",
        "--log-every", "1", "--device", "cpu", "--precision", "fp32"]


def training_volume(tmp_path):
    img = nib.load(str(SAMPLE))
    return write_nifti(tmp_path / "train.nii.gz", np.asarray(img.dataobj, np.float32)[:, :, 10:40], img.affine)


def events_of(run):
    path = run / "events.jsonl"
    return EventReader(path).read_new() if path.exists() else []


def wait_for(condition, seconds: float, step: float = 0.25):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(step)
    return condition()


@pytest.mark.slow
def test_a_training_whose_slicer_is_killed_checkpoints_and_ends_then_resumes(tmp_path):
    """A stand-in for Slicer starts the training as the panel does (a Job), then is SIGKILLed."""
    data, run = training_volume(tmp_path), tmp_path / "run"
    argv = [sys.executable, "-m", "MRSuperResLib", "train", "--data", str(data), "--out", str(run), "--iters",
            "100000", "--checkpoint-every", "100000", *TINY]
    slicer_stand_in = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from MRSuperResLib.in_slicer.jobs import Job
        run = Path({str(run)!r}); run.mkdir(parents=True, exist_ok=True)
        job = Job({argv!r}, run, log=run / "train.log", stopped_means_cancelled=False)
        print(job.pid, flush=True)
        time.sleep(3600)
        """)
    parent = subprocess.Popen([sys.executable, "-c", slicer_stand_in], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        assert wait_for(lambda: any(e.get("event") == "progress" for e in events_of(run)), 180), \
            (run / "train.log").read_text()[-2000:]
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        t0 = time.monotonic()
        assert wait_for(lambda: not process_alive(child), 20), "the training outlived its Slicer by 20 s"
        ended = time.monotonic() - t0
    finally:
        if process_alive(child):
            os.killpg(child, signal.SIGKILL)
    last = [e for e in events_of(run) if e.get("event") in ("stopped", "done", "error")][-1]
    assert last["event"] == "stopped" and "started the run ended" in last["reason"], last
    assert (run / "model.safetensors").exists() and ended < 20
    stopped_at = last["iter"]
    out = subprocess.run([sys.executable, "-m", "MRSuperResLib", "train", "--data", str(data), "--out", str(run),
                          "--iters", str(stopped_at + 2), "--checkpoint-every", "100000", "--resume", *TINY],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    resumed = [e for e in events_of(run) if e.get("event") == "resumed"]
    assert resumed and resumed[-1]["iter"] == stopped_at                  # from the checkpoint it wrote


@pytest.mark.slow
def test_an_enhance_whose_slicer_is_killed_ends_and_removes_its_job_folder(tmp_path, save_tiny):
    from MRSuperResLib.models.rrdbnet import RRDBNet

    model = save_tiny(RRDBNet(1, 1, scale=4, num_feat=32, num_block=4, num_grow_ch=16), "slow4")
    img = nib.load(str(SAMPLE))
    data = np.asarray(img.dataobj, np.float32)
    slicer_stand_in = textwrap.dedent(f"""
        import sys, time, json
        import numpy as np
        from pathlib import Path
        from MRSuperResLib.in_slicer.jobs import Job, python_executable
        from MRSuperResLib.in_slicer.job_worker import save_volume
        from MRSuperResLib.scans.volumes import Volume
        folder = Path({str(tmp_path / "job")!r}); folder.mkdir()
        data = np.load({str(tmp_path / "data.npy")!r})
        save_volume(Volume(data, np.eye(4)), folder / "input.npy")
        (folder / "job.json").write_text(json.dumps(dict(kind="enhance", model={str(model)!r}, detail=None,
            options=dict(axis=2, direction="in-plane", precision="fp32", device="cpu"), name="in")))
        job = Job([python_executable(), "-m", "MRSuperResLib.in_slicer.job_worker", str(folder)], folder)
        print(job.pid, flush=True)
        time.sleep(3600)
        """)
    np.save(tmp_path / "data.npy", data)
    parent = subprocess.Popen([sys.executable, "-c", slicer_stand_in], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    folder = tmp_path / "job"
    try:
        assert wait_for(lambda: any(e.get("event") == "progress" for e in events_of(folder)), 120)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert wait_for(lambda: not process_alive(child), 20), "the job outlived its Slicer by 20 s"
    finally:
        if process_alive(child):
            os.killpg(child, signal.SIGKILL)
    assert not folder.exists()                                            # no gigabytes left in the temp folder


@pytest.mark.slow
def test_quitting_gives_a_training_its_checkpoint_and_it_resumes(tmp_path, monkeypatch):
    """What the panel does on quit (jobs.shutdown): STOP, the run's grace to checkpoint, then end."""
    from MRSuperResLib.in_slicer.jobs import shutdown
    from MRSuperResLib.in_slicer.logic import MRSuperResLogic
    from MRSuperResLib.in_slicer.scene import headless_scene, load_volume

    monkeypatch.setenv("MRSUPERRES_HOME", str(tmp_path / "home"))
    headless_scene()
    node = load_volume(training_volume(tmp_path), "train")
    options = dict(stage="psnr", batch=2, patch=32, blocks=1, features=8, growth=4, log_every=1, device="cpu",
                   precision="fp32", checkpoint_every=100000)
    logic = MRSuperResLogic()
    job = logic.train([node], tmp_path / "mine", iters=100000, **options)
    run = tmp_path / "mine" / "run"
    assert wait_for(lambda: job.poll() == "running" and any(e.get("event") == "progress" for e in job.events), 180)
    t0 = time.monotonic()
    shutdown([job])
    assert job.status == "stopped" and time.monotonic() - t0 < job.grace, job.message
    stopped = [e for e in events_of(run) if e.get("event") == "stopped"][-1]
    again = logic.train([node], tmp_path / "mine", iters=stopped["iter"] + 2, resume=True, **options)
    assert again.wait(timeout=300) == "done", again.message
    resumed = [e for e in events_of(run) if e.get("event") == "resumed"]
    assert resumed and resumed[-1]["iter"] == stopped["iter"]
    assert json.loads((run / "config.json").read_text())["iters"] == 100000    # the first run's record stays


def test_job_folders_of_a_slicer_that_is_gone_are_swept_when_the_logic_starts(tmp_path, monkeypatch):
    """Job folders live under Slicer's temporary path, named after the process that made them; a
    new logic removes those whose process has ended (a crash, a kill) and keeps the living ones."""
    import slicer
    from MRSuperResLib.in_slicer import jobs
    from MRSuperResLib.in_slicer.logic import MRSuperResLogic
    from MRSuperResLib.in_slicer.scene import headless_scene

    headless_scene()
    monkeypatch.setattr(slicer, "app", type("App", (), {"temporaryPath": str(tmp_path / "slicer-tmp")})(),
                        raising=False)
    assert jobs.jobs_root() == tmp_path / "slicer-tmp" / jobs.JOBS_FOLDER
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    living = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folders = {}
        for name, pid in (("gone", gone.pid), ("living", living.pid), ("mine", os.getpid())):
            folders[name] = jobs.jobs_root() / f"{pid}-abc"
            folders[name].mkdir(parents=True)
            (folders[name] / "input.npy").write_bytes(b"x" * 1000)
        MRSuperResLogic()
        assert not folders["gone"].exists() and folders["living"].exists() and folders["mine"].exists()
        made = jobs.new_job_folder()
        assert made.parent == jobs.jobs_root() and made.name.startswith(f"{os.getpid()}-")
    finally:
        living.kill()
        living.wait()


def test_without_torch_a_job_is_refused_in_one_line_and_writes_nothing(tmp_path, monkeypatch):
    """A fresh Slicer's logic (slicer.util.getModuleLogic) exists before the dependencies do; an
    enhance or a training it is asked for then says how to install them, and no job folder or
    training folder is made."""
    import importlib.util

    import slicer
    from MRSuperResLib.errors import MRSuperResError
    from MRSuperResLib.in_slicer import jobs
    from MRSuperResLib.in_slicer.logic import MRSuperResLogic
    from MRSuperResLib.in_slicer.scene import headless_scene, load_volume

    headless_scene()
    node = load_volume(SAMPLE, "sample")
    monkeypatch.setattr(slicer, "app", type("App", (), {"temporaryPath": str(tmp_path / "slicer-tmp")})(),
                        raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    logic = MRSuperResLogic()
    for start in (lambda: logic.enhance(node, waitForCompletion=False),
                  lambda: logic.train([node], str(tmp_path / "run"))):
        with pytest.raises(MRSuperResError, match=r"^PyTorch and MRSuperRes's other dependencies are not "
                                                   r"installed: press 'Install dependencies'"):
            start()
    assert not jobs.jobs_root().exists() and not (tmp_path / "run").exists()
