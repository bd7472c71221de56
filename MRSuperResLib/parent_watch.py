"""A child that ends when the process that started it is gone.

Slicer starts its jobs (enhance, compare, training) with MRSUPERRES_PARENT_PID set to its own
process id. If Slicer crashes or is killed, the child notices within seconds and stops by itself
(a training after writing its checkpoint, an enhance removing its job folder) instead of holding
the GPU and gigabytes of temporary files. A run from a terminal has no such variable and is not
watched. Works through launchers (PythonSlicer starts python-real): the id is Slicer's own.
"""
from __future__ import annotations

import os
import sys
import threading
import time

ENV = "MRSUPERRES_PARENT_PID"
CHECK_SECONDS = 2.0


def parent_alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, killed but not yet reaped, counts as gone)."""
    if sys.platform == "win32":
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x00100000, False, pid)          # SYNCHRONIZE
        if not handle:
            return False
        try:
            return kernel32.WaitForSingleObject(handle, 0) == 0x102    # WAIT_TIMEOUT: not signalled, running
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:                            # Linux: 'Z' after a kill, until reaped
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def watch_parent(on_gone, environ=os.environ) -> threading.Thread | None:
    """Call `on_gone()` once, from a daemon thread, when the process MRSUPERRES_PARENT_PID names
    has ended; None (nothing watched) when the variable is not set."""
    value = environ.get(ENV, "")
    if not value.isdigit():
        return None
    pid = int(value)

    def watch() -> None:
        while parent_alive(pid):
            time.sleep(CHECK_SECONDS)
        on_gone()

    thread = threading.Thread(target=watch, name="mrsuperres-parent-watch", daemon=True)
    thread.start()
    return thread
