"""What a batch leaves beside each output and in its folder: a JSON sidecar (input and its sha256,
model and its sha256, every option, the sha256 of every file written, version, device, precision,
time) written atomically once the output is complete, the test a rerun uses to skip an input
whose output and sidecar match (the files re-hashed: a truncated or replaced output is redone),
and the `mrsuperres_summary.tsv` of every input's status (docs/cohorts.md)."""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from ..errors import MRSuperResError
from ..files import atomic_write_bytes, sha256_of
from ..scans.volumes import stem as _stem

SUMMARY = "mrsuperres_summary"
# what changes the output: a rerun with others redoes it
OPTIONS = ("model", "detail", "detail_model", "scale", "direction", "spacing", "axis", "consistency",
           "self_ensemble", "maps", "dtype", "orientations", "profile")


def sidecar_path(output: Path) -> Path:
    return output.with_name(_stem(output) + ".json")


def options_of(args) -> dict:
    return {k: getattr(args, k, None) for k in OPTIONS}


def up_to_date(output: Path, input_sha: str, model: dict, options: dict) -> bool:
    """The output and its sidecar exist and record this input, model and options, and every file
    the sidecar lists (the output among them) still has the sha256 it was written with."""
    side = sidecar_path(output)
    if not (output.exists() and side.exists()):
        return False
    try:
        record = json.loads(side.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or not all(isinstance(record.get(k), dict) for k in ("input", "model")):
        return False                            # not a sidecar MRSuperRes wrote: redo the output
    return (record.get("input", {}).get("sha256") == input_sha and record.get("options") == options
            and record.get("model", {}).get("sha256") == model.get("sha256")
            and record.get("model", {}).get("name") == model.get("name")
            and files_intact(output, record.get("files")))


def files_intact(output: Path, files) -> bool:
    """Each recorded file (relative to the output's folder) exists with its recorded sha256; a
    sidecar from before checksums were kept lists none, and its output is redone."""
    if not isinstance(files, dict) or output.name not in files:
        return False
    for name, sha in files.items():
        path = output.parent / name
        try:
            if not path.is_file() or sha256_of(path) != sha:
                return False
        except OSError:
            return False
    return True


def write_sidecar(output: Path, item, sha: str, facts: dict, options: dict, written: list[Path]) -> Path:
    """`output`'s JSON sidecar, written atomically once the output is complete: what made it, and
    the sha256 of each file `written` (the output and its maps)."""
    from .. import __version__

    files = {os.path.relpath(path, output.parent).replace(os.sep, "/"): sha256_of(path) for path in written}
    record = {"input": {"path": item.label, "sha256": sha}, "output": output.name, "files": files,
              "model": {"name": facts["model"]["name"], "sha256": facts["model"].get("sha256")},
              "options": options, "version": __version__, "device": facts["device"],
              "precision": facts["precision"], "engine": facts["engine"], "seconds": facts["seconds"],
              "facts": {k: v for k, v in facts.items() if k not in ("model",)}}
    return atomic_write_bytes(sidecar_path(output), (json.dumps(record, indent=1, default=str) + "\n").encode())


def is_up_to_date(item, output: Path, sha: str, options: dict, model_named: dict | None) -> bool:
    """A rerun's test: with --model, against that model; without, against the default the
    sidecar names (still installed, same sha256)."""
    if model_named is not None and model_named.get("name") is not None:
        return up_to_date(output, sha, model_named, options)
    return _default_up_to_date(output, sha, options)


def _default_up_to_date(output: Path, sha: str, options: dict) -> bool:
    """Without --model: the sidecar names the direction's default model; that file must still be it."""
    from ..models.catalog import read_card, resolve_model

    side = sidecar_path(output)
    if not side.exists():
        return False
    try:
        model = json.loads(side.read_text()).get("model", {})
        card = read_card(resolve_model(model.get("name"), False)) or {}
    except (OSError, ValueError, AttributeError, TypeError, MRSuperResError):   # a damaged sidecar: redo
        return False
    return up_to_date(output, sha, {"name": model.get("name"), "sha256": card.get("sha256")}, options)


def _summary_path(out_dir: Path, index: int, count: int) -> Path:
    return out_dir / (f"{SUMMARY}.tsv" if count == 1 else f"{SUMMARY}_shard{index}of{count}.tsv")


def _write_summary(out_dir: Path, rows: list[dict], index: int, count: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["input", "output", "status", "seconds", "message"],
                            delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(_summary_path(out_dir, index, count), buffer.getvalue().encode())


def _bids_description(out_dir: Path, version: str) -> None:
    path = out_dir / "dataset_description.json"
    if not path.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, (json.dumps({
            "Name": "MRSuperRes super-resolution", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "MRSuperRes", "Version": version}]}, indent=2) + "\n").encode())
