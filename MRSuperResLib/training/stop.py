"""How a training run is asked to stop gracefully (a checkpoint, the model, then `stopped`):
SIGTERM or SIGINT, a STOP file in the run folder, or the Slicer that started it gone."""
from __future__ import annotations

import signal
from pathlib import Path


class StopRequest:
    """SIGTERM/SIGINT or a STOP file in the run folder ask for a graceful stop."""

    def __init__(self, run: Path):
        self.stop_file = run / "STOP"
        self.reason = None
        self._previous = {}

    def install(self) -> None:
        import threading
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        self.reason = "signal"

    def parent_gone(self) -> None:
        self.reason = self.reason or "the process that started the run ended"

    def requested(self) -> bool:
        if self.reason is None and self.stop_file.exists():
            self.reason = "stop file"
        return self.reason is not None
