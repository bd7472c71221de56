"""The child side of a job (see jobs.py): `python -m MRSuperResLib.in_slicer.job_worker FOLDER`.

FOLDER holds `job.json` ({"kind": "enhance" or "compare", "model", "detail", "options"}; an
enhance's options carry the plan the logic made, so the child decides nothing again) and
`input.npy` (save_volume: the voxels in VTK's order, the IJK-to-RAS matrix, exact). The worker writes
`events.jsonl` (start, progress, then done, stopped or error) and, for `done`, the result
volumes as `<name>.npy` beside them (maps with their display range); a STOP file in FOLDER cancels between batches.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import EXIT_DONE, EXIT_ERROR, EXIT_INTERNAL, EXIT_STOPPED, Cancelled, MRSuperResError
from ..evaluation.comparison import Comparison, compare_volume
from ..events import EventLog
from ..parent_watch import watch_parent
from ..models.catalog import load_model
from ..pipeline.enhance import enhance_volume
from ..pipeline.plan import Plan
from ..scans.volumes import Volume
from .jobs import message_of
from .nodes import display_top

PROGRESS_SECONDS = 0.5            # at most two progress events a second


def save_volume(volume: Volume, path: Path) -> Path:
    """Voxels as an uncompressed .npy in VTK's memory order (x fastest: the (K, J, I) array a
    Slicer node holds) and the IJK-to-RAS matrix beside it (.affine.npy): exact, no pickles, and
    the parent maps the file into a node with one copy instead of reading, transposing and
    copying it. A map's display range (meta "display_top") goes in .json: it is computed here,
    in the child, not in Slicer's main thread."""
    path = Path(path).with_suffix(".npy")
    np.save(path, np.ascontiguousarray(np.asarray(volume.data, np.float32).transpose(2, 1, 0)))
    np.save(path.with_suffix(".affine.npy"), np.asarray(volume.affine, np.float64))
    shown = {k: volume.meta[k] for k in ("display_top", "display_window") if k in volume.meta}
    if shown:
        path.with_suffix(".json").write_text(json.dumps(shown))
    return path


def load_volume(path: Path, name: str = "") -> Volume:
    """What save_volume wrote, its voxels memory-mapped: `data` is the (I, J, K) view of the
    file's (K, J, I) array, read from disk only when a node is filled from it."""
    path = Path(path).with_suffix(".npy")
    meta = {"path": name or path.stem}
    if path.with_suffix(".json").exists():
        meta.update(json.loads(path.with_suffix(".json").read_text()))
    data = np.load(path, mmap_mode="r", allow_pickle=False).transpose(2, 1, 0)
    return Volume(data, np.load(path.with_suffix(".affine.npy"), allow_pickle=False), meta)


def display_window(volume: Volume) -> list[float]:
    """The window Slicer would choose automatically (its 0.1 and 99.9 percentiles, here of every
    5th voxel), measured in the child so that the parent sets it instead of computing it."""
    flat = np.asarray(volume.data).reshape(-1)[::5]
    low, high = (float(v) for v in np.percentile(flat, [0.1, 99.9]))
    return [low, high if high > low else low + 1.0]


class Reporter:
    """`progress(done, total)` as throttled `progress` events with the time left, counted in
    `unit` (slices; MB while a model downloads, `scale` turning bytes into them)."""

    def __init__(self, log: EventLog, unit: str = "slices", scale: float = 1.0):
        self.log, self.t0, self.last, self.unit, self.scale = log, time.perf_counter(), 0.0, unit, scale

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - self.last < PROGRESS_SECONDS and done < total:
            return
        self.last = now
        eta = (now - self.t0) / done * (total - done) if done else None
        done, total = int(done * self.scale), int(total * self.scale)
        self.log.write("progress", done, done=done, total=total, eta_seconds=eta, unit=self.unit)


def run(folder: Path) -> int:
    spec = json.loads((folder / "job.json").read_text())
    watch_parent(lambda: _orphaned(folder))
    log = EventLog(folder / "events.jsonl")
    stop = folder / "STOP"
    try:
        log.write("start", 0, kind=spec["kind"])
        model, card = load_model(spec.get("model"), detail=spec.get("detail"), cancel=stop.exists,
                                 progress=Reporter(log, unit="kB of the model", scale=2**-10))
        volume = load_volume(folder / "input.npy", spec.get("name", "input"))
        options = dict(spec.get("options") or {}, progress=Reporter(log), cancel=stop.exists)
        outputs, facts = compute(spec["kind"], volume, model, options)
        for name, vol in outputs.items():
            save_volume(vol, folder / f"{name}.npy")
        log.write("done", 0, outputs=sorted(outputs), model_name=card.get("name", "model"), facts=facts)
        return EXIT_DONE
    except Cancelled:
        log.write("stopped", 0, reason="stop file")
        return EXIT_STOPPED
    except MRSuperResError as exc:
        log.write("error", 0, message=str(exc))
        return EXIT_ERROR
    except BaseException as exc:                    # out of memory, a bug: still one line for the user
        log.write("error", 0, message=message_of(exc))
        return EXIT_INTERNAL
    finally:
        log.close()


def _orphaned(folder: Path) -> None:
    """Slicer is gone: nobody will read the result, so the job folder (the input and any outputs,
    gigabytes for a large scan) goes, and the process ends at once."""
    shutil.rmtree(folder, ignore_errors=True)
    os._exit(EXIT_STOPPED)


def compute(kind: str, volume: Volume, model, options: dict) -> tuple[dict, dict]:
    """({name: Volume}, facts) of an enhance or a compare: what a job hands back, the same
    whether it ran in a child or (plain Python) in the caller's process."""
    if kind == "enhance":
        plan = options.get("plan")
        if isinstance(plan, dict):
            options = dict(options, plan=Plan.from_facts(plan))
        hr, facts = enhance_volume(volume, model, **options)
        hr.meta["display_window"] = display_window(hr)
        return {"output": hr, **{f"map_{m}": _ranged(v) for m, v in hr.maps.items()}}, facts
    comp = compare_volume(volume, model, **options)
    outputs = {"low_resolution": comp.low_resolution, **{f"output_{m}": v for m, v in comp.outputs.items()},
               **{f"map_{m}": _ranged(v) for m, v in comp.maps.items()}}
    return outputs, {"axis": comp.axis, "scale": comp.scale, "degradation": comp.degradation,
                     "summary": comp.summary, "per_slice": comp.per_slice}


def _ranged(volume: Volume) -> Volume:
    """A map with its display range, measured here (the child) rather than in Slicer's main thread."""
    volume.meta["display_top"] = display_top(volume)
    return volume


def comparison_of(outputs: dict, facts: dict):
    """The Comparison (comparison.py) that `compute("compare", ...)` returned, rebuilt."""
    return Comparison(None, outputs["low_resolution"], maps_of(outputs, "output_"), facts["axis"], facts["scale"],
                      facts["degradation"], facts["per_slice"], facts["summary"], maps_of(outputs))


def maps_of(outputs: dict, prefix: str = "map_") -> dict:
    """{name: volume} of a job's outputs named `prefix` + name."""
    return {k[len(prefix):]: v for k, v in outputs.items() if k.startswith(prefix)}


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
