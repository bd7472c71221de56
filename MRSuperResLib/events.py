"""The training event log, `RUN/events.jsonl`: what the Slicer panel and scripts read.

One JSON object per line, appended and flushed as it happens (a line that a killed writer left
half is ended before the next writer appends, and readers skip it). Every event has `event` (its
type), `iter` (iterations completed when it was written) and `time` (Unix seconds). Types:

| event | extra fields |
|---|---|
| `start` | `config` (all options), `device`, `precision`, `parameters` (generator), `train_slices`, `val_slices`, `split`, `vgg` (gan stage) |
| `resumed` | as `start`, plus `checkpoint` (the file resumed from) |
| `warning` | `message` (e.g. a corrupt checkpoint skipped) |
| `progress` | `losses` ({name: value}), `lr`, `its_per_sec`, `eta_seconds`, `iters` (target) |
| `validation` | `model` (EMA), `generator` (raw, where there is one) and `bicubic`: {`ssim`, `psnr`, `vif`}: the mean over validation volumes of each one's mean; `volumes`: the same per volume |
| `checkpoint` | `path` |
| `done` | `model` (path of model.safetensors), `wall_seconds` |
| `stopped` | `reason` (`signal` or `stop file`), `checkpoint`, `model` |
| `error` | `message` |

Each run of `mrsuperres train` writes exactly one of `done`, `stopped` or `error` last; a
process killed outright writes none, and its `--resume` appends `resumed`.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

FINAL_EVENTS = ("done", "stopped", "error")


def _clean(value):
    """JSON-safe: NaN/inf become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class EventLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = open(self.path, "a", encoding="utf-8")
        if _ends_mid_line(self.path):      # a writer killed mid-line: its fragment stays a line of its own,
            self._file.write("\n")         # which readers skip, rather than swallowing the next event

    def write(self, event: str, iteration: int, **fields) -> dict:
        record = {"event": event, "iter": int(iteration), "time": round(time.time(), 3), **_clean(fields)}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        return record

    def close(self) -> None:
        self._file.close()


def _ends_mid_line(path: Path) -> bool:
    """Whether the file's last line has no newline (an empty file has no line)."""
    with open(path, "rb") as f:
        if f.seek(0, 2) == 0:
            return False
        f.seek(-1, 2)
        return f.read(1) != b"\n"


class EventReader:
    """Follows an event log as it grows: each `read_new()` returns the events of the lines
    completed since the last call. A line still being written (no newline yet) waits for the
    next call; a missing file reads as no events; a line that is not a JSON object is skipped."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._offset = 0

    def read_new(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        events = []
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events


def read_events(path: str | Path) -> list[dict]:
    """Every complete line of an event log (a line being written is skipped)."""
    return EventReader(path).read_new()


def final_event(events: list[dict]) -> dict | None:
    """The last `done`, `stopped` or `error` event: how the (latest) run ended; None while it runs."""
    return next((e for e in reversed(events) if e.get("event") in FINAL_EVENTS), None)


def start_event(events: list[dict]) -> dict | None:
    """The first `start` or `resumed` event: the run's options (`config`), device and learning rate."""
    return next((e for e in events if e.get("event") in ("start", "resumed")), None)
