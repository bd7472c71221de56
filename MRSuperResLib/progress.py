"""One progress reporter for the command line and training.

On a terminal it is a tqdm bar. Elsewhere (a log file, a cluster job, Slicer's train.log) a
bar's carriage returns are useless, so it writes a plain line every `every` seconds with the
count, the rate and the time left; a job shorter than that prints nothing.
"""
from __future__ import annotations

import sys
import time

LOG_EVERY_SECONDS = 30.0


class Progress:
    """`update(done, total=None, **postfix)`; also callable as a `(done, total)` callback."""

    def __init__(self, label: str, total: int = 0, unit: str = "slices", *, initial: int = 0,
                 stream=None, terminal: bool | None = None, every: float = LOG_EVERY_SECONDS,
                 enabled: bool = True):
        self.label, self.total, self.unit, self.every = label, total, unit, every
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.terminal = (bool(getattr(self.stream, "isatty", lambda: False)()) if terminal is None else terminal)
        self.initial = self.done = initial
        self.t0 = self.last_line = time.perf_counter()
        self.lines = 0
        self.printed = None
        self.closed = False
        self.bar = None
        if enabled and self.terminal:
            from tqdm import tqdm

            self.bar = tqdm(total=total or None, initial=initial, desc=label, unit=f" {unit}",
                            file=self.stream, dynamic_ncols=True, leave=True)

    def __call__(self, done: int, total: int) -> None:
        self.update(done, total)

    def seconds_left(self) -> float | None:
        """Time left at the rate measured so far in this process (None before any progress)."""
        elapsed, gained = time.perf_counter() - self.t0, self.done - self.initial
        if gained <= 0 or not self.total:
            return None
        return elapsed / gained * max(self.total - self.done, 0)

    def update(self, done: int, total: int | None = None, **postfix) -> None:
        if total:
            self.total = total
        self.done = done
        if not self.enabled or self.closed:
            return
        if self.bar is not None:
            if self.bar.total != self.total:
                self.bar.total = self.total
            if postfix:
                self.bar.set_postfix(_format(postfix), refresh=False)
            self.bar.update(done - self.bar.n)
        elif time.perf_counter() - self.last_line >= self.every:
            self.last_line = time.perf_counter()
            self._line(postfix)
        if self.total and done >= self.total:
            self.close()

    def _line(self, postfix: dict) -> None:
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        left = self.seconds_left()
        rate = (self.done - self.initial) / max(time.perf_counter() - self.t0, 1e-9)
        extra = "".join(f", {k} {v}" for k, v in _format(postfix).items())
        self.stream.write(f"{self.label}: {self.done}/{self.total or '?'} {self.unit}{share}, {rate:.3g} {self.unit}/s"
                          f"{'' if left is None else f', {left:.0f} s left'}{extra}\n")
        self.stream.flush()
        self.lines += 1
        self.printed = self.done

    def close(self) -> None:
        """Ends the bar; in a log, a last line when any was written (short jobs stay silent)."""
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.lines and self.printed != self.done:
            self._line({})


def _format(postfix: dict) -> dict:
    return {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()}
