"""Long work in a child process: one mechanism for enhance, compare and train.

Why a child and not a thread: inside Slicer the main thread holds Python's GIL while it is
idle (PythonQt never releases it), so a worker thread in Slicer's process only advances while
the panel's timer runs Python; a 40-second enhance would take many minutes. A child process
has its own interpreter and runs at full speed.

The protocol: the parent puts the job's inputs in a folder; the child writes `events.jsonl`
there (the schema of events.py: `start`, `progress` with `done`, `total`, `eta_seconds`, and
one final `done`, `stopped` or `error`) and its outputs. The parent polls the log (the panel
from its QTimer, the console and batch scripts by blocking in `wait()`), and whatever it makes
of the outputs (scene nodes) it makes on its own thread in `finish`. Cancel writes a STOP
file, which the child checks between batches; a child that has not ended within `grace`
seconds, or any child on `terminate()`, is ended with its whole process group (Slicer's
PythonSlicer launcher starts python-real as its own child; on Windows, the process tree).
Quitting Slicer (`shutdown`) asks every job to stop and gives each its grace (a training's is
the time to write its checkpoint) before ending it; a child whose Slicer is killed or crashes
stops by itself within seconds (parent_watch).
"""
from __future__ import annotations

import inspect
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..errors import MRSuperResError, environment_problem
from ..options import PROJECT_DIR
from ..files import process_alive
from ..parent_watch import ENV as PARENT_ENV
from ..events import EventReader, final_event

STOP_FILE = "STOP"
STATES = ("running", "done", "stopped", "cancelled", "failed")


def popen_options() -> dict:
    """A process group of its own, and no console window on Windows."""
    if sys.platform == "win32":
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        return dict(creationflags=flags)
    return dict(start_new_session=True)


def kill_tree(process: subprocess.Popen) -> None:
    """End a child and everything it started, at once."""
    if process.poll() is not None and sys.platform == "win32":
        return
    if sys.platform == "win32":
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)], capture_output=True,
                       creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
    else:
        try:
            os.killpg(process.pid, signal.SIGKILL)     # the group the child leads (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        pass


def child_environment(watched: bool = False) -> dict:
    """This process's environment with the folder holding MRSuperResLib first on PYTHONPATH, so
    the child imports the same library (an extension's, a checkout's) as its parent. `watched`:
    the child also gets this process's id, and stops by itself once this process is gone
    (parent_watch)."""
    here = str(PROJECT_DIR)
    rest = [p for p in [os.environ.get("PYTHONPATH")] if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([here] + rest))
    if watched:
        env[PARENT_ENV] = str(os.getpid())
    return env


JOBS_FOLDER = "MRSuperRes-jobs"


def jobs_root() -> Path:
    """Where job folders live: under Slicer's temporary path in the application (where its users
    look and its settings point), else the system's temporary folder."""
    import tempfile

    try:
        import slicer
        base = getattr(getattr(slicer, "app", None), "temporaryPath", None)
    except ImportError:
        base = None
    return Path(base or tempfile.gettempdir()) / JOBS_FOLDER


def new_job_folder() -> Path:
    """A fresh job folder named after this process (`<pid>-...`), so that a later Slicer can tell
    whose it is."""
    import tempfile

    root = jobs_root()
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root))


def sweep_job_folders(root: Path | None = None) -> list[Path]:
    """Remove the job folders of processes that are gone (a Slicer that crashed or was killed
    before it could clean up); returns what was removed. Folders of running processes stay."""
    removed = []
    root = root or jobs_root()
    for folder in (root.iterdir() if root.is_dir() else []):
        owner = folder.name.split("-", 1)[0]
        if folder.is_dir() and owner.isdigit() and int(owner) != os.getpid() and not process_alive(int(owner)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def check_child_packages() -> None:
    """A job's child computes with torch: where it is missing (a fresh Slicer, whose panel and
    logic need none) say how to get it, in one line, before anything is written."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise MRSuperResError("PyTorch and MRSuperRes's other dependencies are not installed: press 'Install "
                              "dependencies' in the MRSuperRes module, or run MRSuperRes.ensure_dependencies()")


def python_executable() -> str:
    """Slicer's Python for child processes (`PythonSlicer` in the app), else this Python."""
    exe = Path(sys.executable)
    if exe.name.lower().startswith("slicer"):          # inside the app sys.executable may be Slicer itself
        return shutil.which("PythonSlicer") or str(exe.with_name("PythonSlicer"))
    return sys.executable


class Job:
    """A child process that reports through an event log.

    `poll()` -> running, done, stopped (a graceful stop that still produced a result, as
    training does), cancelled or failed; then `result` (what `finish(final_event)` made),
    `error` (one line). `done`, `total` and `secondsLeft` follow its progress; `events` holds
    every event read so far. `on_events(new)` is called from `poll()` with each batch of new
    events (the training tables). `cleanup` folders are removed once the job has ended."""

    def __init__(self, cmd: list[str], folder: Path, *, finish=None, on_events=None, log: Path | None = None,
                 cleanup: tuple = (), grace: float = 10.0, stopped_means_cancelled: bool = True):
        self.folder = Path(folder)
        self.events: list = []
        self.status, self.result, self.error = "running", None, None
        self.done, self.total, self.eta, self.unit = 0, 0, None, "slices"
        self._finish, self._on_events, self._cleanup = finish, on_events, [Path(p) for p in cleanup]
        self._landing = None                  # a finish that makes its nodes in steps, one per poll
        self._grace, self._stop_asked = grace, None
        self._stopped_means_cancelled = stopped_means_cancelled
        self._reader = EventReader(self.folder / "events.jsonl")
        self.log = log or self.folder / "job.log"
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=child_environment(watched=True),
                                            **popen_options())
        self.pid = self.process.pid

    # -- progress
    @property
    def secondsLeft(self) -> float | None:
        return self.eta

    @property
    def grace(self) -> float:
        """Seconds the child has to stop by itself once asked, before it is ended."""
        return self._grace

    @property
    def progress(self) -> tuple[int, int, float | None]:
        """(done, total, seconds left or None)."""
        return self.done, self.total, self.eta

    def _read(self) -> None:
        new = self._reader.read_new()
        if not new:
            return
        self.events += new
        for e in new:
            if e.get("event") == "progress":
                self.unit = e.get("unit", "slices")       # MB of the model while it downloads
                self.done = int(e.get("done", e.get("iter", 0)))
                self.total = int(e.get("total", e.get("iters", 0)) or 0)
                self.eta = e.get("eta_seconds")
        if self._on_events is not None:
            self._on_events(new)

    # -- state
    def poll(self) -> str:
        if self.status != "running":
            return self.status
        if self._landing is not None:
            return self._land()
        self._read()
        code = self.process.poll()
        if code is None:
            if self._stop_asked is not None and time.monotonic() - self._stop_asked > self._grace:
                kill_tree(self.process)           # it did not stop in time: end it and its children
                code = self.process.poll()
            if code is None:
                return self.status
        self._read()
        self._end(code)
        return self.status

    def _end(self, code: int) -> None:
        last = final_event(self.events)
        kind = last.get("event") if last else None
        try:
            if self._stop_asked is not None and self._stopped_means_cancelled:
                self.status, self.error = "cancelled", "cancelled"   # asked to cancel: add nothing, even if done
            elif kind == "done" and code == 0:
                self._result_of(last, "done")
            elif kind == "stopped" and not self._stopped_means_cancelled:
                self._result_of(last, "stopped")
            elif self._stop_asked is not None:
                self.status, self.error = "cancelled", "cancelled"
            else:
                self.status = "failed"
                self.error = (last.get("message") if kind == "error" else None) or self._log_tail(code)
        except BaseException as exc:            # making the result failed (e.g. a node): report it
            self.status, self.error = "failed", message_of(exc)
        finally:
            if self._landing is None:
                self._clean()

    def _result_of(self, last: dict, status: str) -> None:
        """What `finish` makes of the final event; a finish that is a generator lands in steps, one
        per poll, the job still "running" until its last step (Slicer's timer never stalls for
        all of it at once)."""
        result = self._finish(last) if self._finish else last
        if inspect.isgenerator(result):
            self._landing, self._landed = result, status
            self._land()
        else:
            self.result, self.status = result, status

    def _land(self) -> str:
        try:
            if self._stop_asked is not None and self._stopped_means_cancelled:
                self._landing.close()           # cancelled while landing: the steps remove what they made
                self.status, self.error = "cancelled", "cancelled"
            else:
                next(self._landing)
                return self.status
        except StopIteration as done:
            self.result, self.status = done.value, self._landed
        except BaseException as exc:
            self.status, self.error = "failed", message_of(exc)
        self._landing = None
        self._clean()
        return self.status

    def _clean(self) -> None:
        for folder in self._cleanup:
            shutil.rmtree(folder, ignore_errors=True)

    def _log_tail(self, code: int) -> str:
        try:
            lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            lines = []
        return f"the job's process ended (exit {code}){': ' + lines[-1].strip() if lines else ''}"

    # -- control
    def cancel(self) -> None:
        """Ask the child to stop (it checks between batches); returns at once. The next polls
        end it forcibly if it has not stopped within `grace` seconds."""
        if self.status == "running" and self._stop_asked is None:
            self._stop_asked = time.monotonic()
            try:
                (self.folder / STOP_FILE).touch()
            except OSError:
                self._grace = 0.0

    def terminate(self) -> None:
        """End the child and its children now (Ctrl-C in the console); the job counts as cancelled."""
        if self.status == "running":
            self._stop_asked = self._stop_asked or time.monotonic()
            kill_tree(self.process)
            self.poll()

    def wait(self, poll_seconds: float = 0.2, timeout: float | None = None):
        """Block until the job ends; returns its result, raises MRSuperResError on failure."""
        end = None if timeout is None else time.monotonic() + timeout
        try:
            while self.poll() == "running":
                if end is not None and time.monotonic() > end:
                    raise MRSuperResError(f"the job did not finish within {timeout:g} s")
                time.sleep(poll_seconds)
        except KeyboardInterrupt:
            self.terminate()
            raise
        if self.status == "failed":
            raise MRSuperResError(self.error)
        if self.status == "cancelled":
            from ..errors import Cancelled
            raise Cancelled()
        return self.result


def shutdown(jobs, grace: float | None = None, poll_seconds: float = 0.2) -> None:
    """Slicer is quitting: every job is asked to stop at once (its STOP file: a training writes its
    checkpoint and model, an enhance stops between batches), then each gets its own grace period
    (a training's STOP_GRACE; `grace` caps it) before what is left of it is ended. The waits run
    side by side, so quitting takes at most the longest grace, not their sum."""
    running = [job for job in jobs if job is not None and job.poll() == "running"]
    for job in running:
        job.cancel()
    start = time.monotonic()
    deadline = {id(job): start + (job.grace if grace is None else min(grace, job.grace)) for job in running}
    while running:
        running = [job for job in running if job.poll() == "running"]
        late = [job for job in running if time.monotonic() > deadline[id(job)]]
        for job in late:
            job.terminate()
        running = [job for job in running if job not in late]
        if running:
            time.sleep(poll_seconds)


def finish_steps(steps):
    """Run a generator of landing steps to its end, in one go; its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def message_of(exc: BaseException) -> str:
    """One line for any failure a user may meet."""
    if isinstance(exc, MRSuperResError):
        return str(exc)
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return "out of memory: choose the CPU, a smaller volume, or close other programs"
    return environment_problem(exc) or f"{type(exc).__name__}: {exc}"


class ThreadJob:
    """The same API as Job, computing on a thread of this process: for plain Python, where no
    idle main thread holds the GIL (never inside Slicer's GUI, see the module docstring).

    `compute(progress, cancelled)` runs on the thread (library code only: no MRML); `finish(value)`
    runs inside `poll()` on the polling thread and makes the nodes."""

    def __init__(self, compute, finish):
        import threading

        self._compute, self._finish = compute, finish
        self.cancelled = threading.Event()
        self.done, self.total, self.started = 0, 0, time.monotonic()
        self.status, self.result, self.error = "running", None, None
        self._value, self._failure = None, None
        self._thread = threading.Thread(target=self._work, name="mrsuperres-job", daemon=True)
        self._thread.start()

    def _progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def _work(self) -> None:
        try:
            self._value = self._compute(self._progress, self.cancelled)
        except BaseException as exc:
            self._failure = exc

    grace = 0.0                       # a thread cannot be ended: it is asked, and stops between batches

    def cancel(self) -> None:
        self.cancelled.set()

    terminate = cancel

    @property
    def secondsLeft(self) -> float | None:
        elapsed = time.monotonic() - self.started
        return elapsed / self.done * (self.total - self.done) if self.done else None

    @property
    def progress(self) -> tuple[int, int, float | None]:
        return self.done, self.total, self.secondsLeft

    def poll(self) -> str:
        if self.status != "running" or self._thread.is_alive():
            return self.status
        from ..errors import Cancelled
        if self._failure is not None:
            self.status = "cancelled" if isinstance(self._failure, Cancelled) else "failed"
            self.error = "cancelled" if self.status == "cancelled" else message_of(self._failure)
            return self.status
        try:
            result = self._finish(self._value)
            self.result = finish_steps(result) if inspect.isgenerator(result) else result
            self.status = "done"
        except BaseException as exc:
            self.status, self.error = "failed", message_of(exc)
        return self.status

    def wait(self, poll_seconds: float = 0.2, timeout: float | None = None):
        self._thread.join(timeout)
        self.poll()
        if self._failure is not None:
            raise self._failure
        if self.status == "failed":
            raise MRSuperResError(self.error)
        return self.result
