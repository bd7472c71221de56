"""Long work from the Slicer logic runs in child processes, as it must inside the real application.

Slicer's idle main thread holds the GIL in C between timer ticks; `usleep` called through
`ctypes.PyDLL` does the same (PyDLL keeps the GIL), so `idle_main_thread` is that application,
polling the job the way the panel's QTimer does.
"""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, tiny_model

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")

from MRSuperResLib.scans import geometry  # noqa: E402
from MRSuperResLib.errors import Cancelled, MRSuperResError  # noqa: E402
from MRSuperResLib.in_slicer.logic import MRSuperResLogic  # noqa: E402
from MRSuperResLib.in_slicer.scene import headless_scene, load_volume  # noqa: E402

REAL_LR = ROOT / "Testing" / "Data" / "aniso_vox.nii.gz"
LIBC = ctypes.PyDLL(None)


def idle_main_thread(job, limit: float = 600.0) -> float:
    """Poll `job` every 250 ms while holding the GIL in between, as Slicer's idle GUI does;
    returns the seconds until it ended."""
    t0 = time.monotonic()
    while job.poll() == "running":
        LIBC.usleep(250000)
        assert time.monotonic() - t0 < limit, "the job did not end"
    return time.monotonic() - t0


def ijk_to_ras(node) -> np.ndarray:
    import vtk
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


def job_folders() -> set:
    return set(Path(tempfile.gettempdir()).glob("mrsuperres-job-*"))


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (a killed one left as a zombie does not)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in "ZX":
            return True
    return False


def group_ended(pgid: int, within: float = 5.0) -> bool:
    """Whether every process of the group has ended within `within` seconds: SIGKILL is delivered
    when the kernel next runs each process, so on a busy machine a killed grandchild can still
    show as running for a moment after its parent has been reaped. One that escaped the kill
    sleeps for 600 s and fails this."""
    t0 = time.monotonic()
    while group_alive(pgid):
        if time.monotonic() - t0 > within:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def scene():
    return headless_scene()


@pytest.fixture
def heavy(save_tiny):
    """A network with enough work for the GIL to matter (a few seconds on two cores)."""
    return save_tiny(tiny_model(4, blocks=2, feat=32, grow=16), "heavy")


@pytest.mark.slow
def test_a_non_blocking_enhance_runs_at_full_speed_while_the_main_thread_holds_the_gil(scene, heavy):
    node = load_volume(REAL_LR, "aniso")
    logic = MRSuperResLogic()
    t0 = time.monotonic()
    blocking = logic.enhance(node, model=str(heavy), axis=2, precision="fp32")
    blocking_seconds = time.monotonic() - t0
    before = scene.GetNumberOfNodes()
    job = logic.enhance(node, model=str(heavy), axis=2, precision="fp32", waitForCompletion=False)
    seconds = idle_main_thread(job)
    assert job.status == "done", job.error
    assert seconds < 1.5 * blocking_seconds + 10, (seconds, blocking_seconds)
    sr = job.result
    assert scene.GetNumberOfNodes() > before and sr.GetName().startswith("aniso heavy x4")
    assert np.array_equal(ijk_to_ras(sr), geometry.resample_affine(ijk_to_ras(node), 2, 4))   # the exact HR grid
    assert np.array_equal(slicer.util.arrayFromVolume(sr), slicer.util.arrayFromVolume(blocking))
    assert job.done == job.total == slicer.util.arrayFromVolume(node).shape[0]


@pytest.mark.slow
def test_a_non_blocking_compare_gives_its_metrics_table_under_the_idle_gil(scene, tmp_path, heavy):
    node = load_volume(REAL_LR, "aniso")
    logic = MRSuperResLogic()
    t0 = time.monotonic()
    logic.compare(node, model=str(heavy), scale=4, axis=2, precision="fp32")
    blocking_seconds = time.monotonic() - t0
    job = logic.compare(node, model=str(heavy), scale=4, axis=2, precision="fp32", waitForCompletion=False)
    seconds = idle_main_thread(job)
    assert job.status == "done", job.error
    assert seconds < 1.5 * blocking_seconds + 10, (seconds, blocking_seconds)
    result = job.result
    assert result.metricsTable.GetNumberOfRows() == 3 and np.isfinite(result.metrics["Bicubic"]["psnr"][0])
    hr = ijk_to_ras(result.superResolved)
    assert np.array_equal(hr, ijk_to_ras(result.bicubic))
    assert np.allclose(ijk_to_ras(result.lowResolution), geometry.resample_affine(hr, 2, 0.25), atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["enhance", "compare"])
def test_cancel_mid_way_leaves_no_node_file_or_process(scene, save_tiny, kind):
    heavy = save_tiny(tiny_model(4, blocks=6, feat=48, grow=24), "heavier")      # long enough to stop mid-way
    node = load_volume(REAL_LR, "aniso")
    logic = MRSuperResLogic()
    count, folders = scene.GetNumberOfNodes(), job_folders()
    call = logic.enhance if kind == "enhance" else logic.compare
    job = call(node, model=str(heavy), axis=2, precision="fp32", waitForCompletion=False,
               **({"selfEnsemble": True} if kind == "enhance" else {}))
    t0 = time.monotonic()
    while job.poll() == "running" and job.done == 0:       # mid-way: it has reported progress
        time.sleep(0.05)
        assert time.monotonic() - t0 < 300
    assert job.status == "running" and 0 < job.done <= job.total      # compare: the metrics are still to come
    job.cancel()
    idle_main_thread(job, limit=60)
    assert job.status == "cancelled" and job.result is None
    assert scene.GetNumberOfNodes() == count
    assert job_folders() == folders                          # the job's folder is gone
    assert job.process.poll() is not None and group_ended(job.pid)
    with pytest.raises(Cancelled):
        job.wait()


@pytest.mark.slow
def test_a_child_that_ignores_stop_is_ended_with_its_children(tmp_path):
    """Slicer's PythonSlicer starts python-real as its own child: cancel ends the whole group."""
    from MRSuperResLib.in_slicer.jobs import Job

    code = ("import subprocess, sys, time; "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)")
    job = Job([sys.executable, "-c", code], tmp_path, grace=0.5)
    time.sleep(1.0)
    job.cancel()
    t0 = time.monotonic()
    while job.poll() == "running":
        time.sleep(0.1)
        assert time.monotonic() - t0 < 10
    assert job.status == "cancelled" and group_ended(job.pid)
    stopped = Job([sys.executable, "-c", code], tmp_path / "..", grace=30)
    t0 = time.monotonic()
    stopped.terminate()                                      # Slicer quits: at once
    assert stopped.status == "cancelled" and time.monotonic() - t0 < 3
    assert group_ended(stopped.pid)


@pytest.mark.slow
def test_failures_in_the_child_are_one_line_and_add_nothing(scene, save_tiny):
    node = load_volume(REAL_LR, "aniso")
    logic = MRSuperResLogic()
    count = scene.GetNumberOfNodes()
    x2 = save_tiny(tiny_model(2), "x2")
    with pytest.raises(MRSuperResError, match=r"is x2, but x4 was asked for") as info:
        logic.compare(node, model=str(x2), scale=4, axis=2)
    assert "\n" not in str(info.value)
    with pytest.raises(MRSuperResError, match="model file not found"):     # refused before any job starts
        logic.enhance(node, model="/no/such/model.safetensors", waitForCompletion=False)
    broken = save_tiny(tiny_model(4), "broken")
    broken.write_bytes(broken.read_bytes()[:-64] + bytes(64))           # its card no longer matches it
    job = logic.enhance(node, model=str(broken), waitForCompletion=False)
    idle_main_thread(job, limit=120)
    assert job.status == "failed" and "does not match its model card" in job.error and "\n" not in job.error
    assert scene.GetNumberOfNodes() == count


@pytest.mark.slow
def test_in_process_running_stays_for_plain_python(scene, save_tiny):
    node = load_volume(REAL_LR, "aniso")
    near = save_tiny(tiny_model(4), "t")
    logic = MRSuperResLogic()
    a = logic.enhance(node, model=str(near), axis=2, precision="fp32", inProcess=True)
    b = logic.enhance(node, model=str(near), axis=2, precision="fp32")
    assert np.array_equal(slicer.util.arrayFromVolume(a), slicer.util.arrayFromVolume(b))
    assert np.array_equal(ijk_to_ras(a), ijk_to_ras(b))


def run_batch(args: list[str], prelude: str = "", env=None) -> subprocess.CompletedProcess:
    """scripts/slicer_enhance.py as `Slicer --python-script` runs it: `prelude` sets up what the
    application provides (or breaks), then the script runs as __main__."""
    script = ROOT / "scripts" / "slicer_enhance.py"
    code = (f"import runpy, sys\n{prelude}\nsys.argv = [{str(script)!r}, '--', *{args!r}]\n"
            f"runpy.run_path({str(script)!r}, run_name='__main__')\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env=None if env is None else {**os.environ, **env})


APP_PRELUDE = """
import types, slicer
from MRSuperResLib.in_slicer.scene import headless_scene
headless_scene()
slicer.app = types.SimpleNamespace(layoutManager=lambda: None)      # Slicer --no-main-window
def _exit(code):
    raise SystemExit(code)
slicer.util.exit = _exit
"""


@pytest.mark.slow
def test_the_batch_script_always_exits_with_one_line_per_failure(tmp_path, save_tiny):
    model = str(save_tiny(tiny_model(4), "t"))
    text = tmp_path / "notes.nii.gz"
    text.write_text("not a volume\n")
    cases = [([str(tmp_path / "missing.nii.gz")], "", 1, "file not found"),
             ([str(text)], "", 1, "not a readable NIfTI file"),
             ([str(REAL_LR)], "", 0, None),
             ([str(REAL_LR)], APP_PRELUDE + "def _fail(path, *a, **k):\n    raise RuntimeError('Failed to load volume')\n"
              "slicer.util.loadVolume = _fail\n", 1, "could not read"),
             ([str(REAL_LR)], "", 1, "No module named torch")]
    no_torch = tmp_path / "no_torch" / "torch"                # a Slicer without the PyTorch extension
    no_torch.mkdir(parents=True)
    (no_torch / "__init__.py").write_text("raise ImportError('No module named torch')\n")
    for i, (inputs, prelude, code, message) in enumerate(cases):
        env = {"PYTHONPATH": os.pathsep.join([str(no_torch.parent), os.environ.get("PYTHONPATH", "")])} \
            if i == len(cases) - 1 else None
        out = str(tmp_path / f"out{i}")                     # each case its own: an up-to-date output is skipped
        done = run_batch(["--input", *inputs, "--output", out, "--model", model, "--axis", "2"], prelude, env)
        assert done.returncode == code, (inputs, done.stderr[-1500:])
        errors = [ln for ln in done.stderr.splitlines() if ln.strip()]
        if message is None:
            assert errors == [] and (tmp_path / f"out{i}" / "aniso_vox_sr.nii.gz").exists()
        else:
            assert len(errors) == 1 and message in errors[0], errors
