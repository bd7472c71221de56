"""A child that ends when the process that started it is gone.

Slicer starts its jobs (enhance, compare, training) with MRSUPERRES_PARENT_PID set to its own
process id. If Slicer crashes or is killed, the child notices within seconds and stops by itself
(a training after writing its checkpoint, an enhance removing its job folder) instead of holding
the GPU and gigabytes of temporary files. A run from a terminal has no such variable and is not
watched. Works through launchers (PythonSlicer starts python-real): the id is Slicer's own.
"""
from __future__ import annotations

import os
import threading
import time

from .files import process_alive

ENV = "MRSUPERRES_PARENT_PID"
CHECK_SECONDS = 2.0


def watch_parent(on_gone, environ=os.environ) -> threading.Thread | None:
    """Call `on_gone()` once, from a daemon thread, when the process MRSUPERRES_PARENT_PID names
    has ended; None (nothing watched) when the variable is not set."""
    value = environ.get(ENV, "")
    if not value.isdigit():
        return None
    pid = int(value)

    def watch() -> None:
        while process_alive(pid):
            time.sleep(CHECK_SECONDS)
        on_gone()

    thread = threading.Thread(target=watch, name="mrsuperres-parent-watch", daemon=True)
    thread.start()
    return thread
