"""Whole cohorts: `mrsuperres enhance` over several files, folders, globs, BIDS datasets and DICOM
series, into one output folder, resumable and shardable without a coordinator.

- Inputs (`discover`): volume files (.nii, .nii.gz, .nrrd, .nhdr), folders (their volume files and
  the DICOM series in them and below), globs, and BIDS dataset roots (the anatomical images under
  sub-*/[ses-*]/anat). DICOM series are read by dicom.py; other modalities and localizers are
  listed as skipped, with the reason.
- Outputs: one per input under -o, `<name>_sr.nii.gz` (BIDS: a derivatives dataset,
  `..._desc-superres_<suffix>.nii.gz` and its dataset_description.json), each with a JSON sidecar
  (input and its sha256, model and its sha256, every option, version, device, precision, time).
  A rerun skips an input whose output and sidecar match (same input, model and options);
  `--overwrite` forces. Files are written atomically, the sidecar last, so a killed batch resumes
  where it stopped.
- A failing volume is reported and the batch goes on; `mrsuperres_summary.tsv` lists every input's
  status, time and message; the exit status is 1 when any failed.
- Sharding (`--shard I/N`, or torchrun's RANK/WORLD_SIZE, or a SLURM array task): the I-th of N
  round-robin parts of the sorted input list; under torchrun the GPU is LOCAL_RANK's.
"""
from __future__ import annotations

import csv
import glob
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import MRSuperResError
from .files import atomic_write_bytes, sha256_of

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr")
SUMMARY = "mrsuperres_summary"
OPTIONS = ("model", "detail", "detail_model", "scale", "direction", "spacing", "axis", "consistency",
           "self_ensemble", "maps", "dtype")               # what changes the output: a rerun with others redoes it


@dataclass
class Item:
    label: str                         # what the user sees: a path, or a DICOM series
    output: Path                       # relative to -o
    path: Path | None = None           # a volume file ...
    series: object = None              # ... or a dicom.Series
    skip: str | None = None            # why it is not enhanced
    error: str | None = None           # why it cannot be: reported as failed
    bids: bool = False                 # from a BIDS dataset: the output folder becomes a derivatives dataset

    def read(self):
        from .dicom import read_series
        from .volumes import read_volume

        if self.error is not None:
            raise MRSuperResError(self.error)
        return read_series(self.series) if self.series is not None else read_volume(self.path)

    def sha256(self) -> str:
        if self.error is not None:
            raise MRSuperResError(self.error)
        if self.series is None:
            if not self.path.is_file():
                raise MRSuperResError(f"file not found: {self.path}")
            return sha256_of(self.path)
        import hashlib
        h = hashlib.sha256()
        for f in sorted(self.series.files):
            h.update(sha256_of(f).encode())
        return h.hexdigest()


def is_volume_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(VOLUME_SUFFIXES)


def is_batch(inputs: list[str], shard: str | None) -> bool:
    """More than one input, a folder, a glob, a DICOM file, or a shard: `-o` is then a folder."""
    from .volumes import looks_like_dicom

    return (len(inputs) > 1 or shard is not None
            or any(Path(i).is_dir() or glob.has_magic(i) or (Path(i).is_file() and looks_like_dicom(i))
                   for i in inputs))


def discover(inputs: list[str], exclude: Path | None = None) -> list[Item]:
    """Every volume the inputs name, in a fixed order, with unique output names; nothing under
    `exclude` (the output folder, which may lie inside an input folder)."""
    items: list[Item] = []
    for given in inputs:
        path = Path(given)
        if glob.has_magic(given) and not path.exists():
            matches = sorted(glob.glob(given, recursive=True))
            if not matches:
                raise MRSuperResError(f"no file matches {given}")
            items += discover(matches, exclude)
        elif path.is_dir() and (path / "dataset_description.json").exists():
            items += _bids(path)
        elif path.is_dir():
            items += _folder(path, exclude)
        elif path.is_file() and path.name.lower().endswith(VOLUME_SUFFIXES):
            items.append(Item(str(path), Path(_stem(path) + "_sr.nii.gz"), path=path))
        elif path.is_file():
            items += _dicom(path.parent, only=path) or [Item(str(path), Path(_stem(path) + "_sr.nii.gz"), path=path)]
        else:                                   # fails on its own when read: the batch goes on
            items.append(Item(str(path), Path(_stem(path) + "_sr.nii.gz"), path=path))
    return _unique(items)


def _stem(path: Path) -> str:
    from .volumes import stem
    return stem(path)


def _folder(folder: Path, exclude: Path | None = None) -> list[Item]:
    """The volume files in `folder` and below, then its DICOM series; outputs keep the subfolders."""
    skip = exclude.resolve() if exclude is not None else None
    inside = [p for p in sorted(folder.rglob("*"))
              if skip is None or (p.resolve() != skip and skip not in p.resolve().parents)]
    items = [Item(str(p), p.parent.relative_to(folder) / (_stem(p) + "_sr.nii.gz"), path=p)
             for p in inside if is_volume_file(p)]
    for sub in [folder, *(d for d in inside if d.is_dir())]:
        items += _dicom(sub, into=sub.relative_to(folder))
    return items


def _dicom(folder: Path, only: Path | None = None, into: Path = Path(".")) -> list[Item]:
    """The DICOM series in `folder` (only the one holding the file `only`, if given)."""
    from .dicom import find_series
    from .volumes import looks_like_dicom

    if not looks_like_dicom(only or folder):
        return []
    found = []
    for series in find_series(folder):
        if only is not None and only.resolve() not in {Path(f).resolve() for f in series.files}:
            continue
        label = f"{folder} (DICOM series '{series.description or series.uid}')"
        found.append(Item(label, into / (series.name + "_sr.nii.gz"), series=series, skip=series.skip))
    if not found:
        given = only or folder
        found.append(Item(str(given), into / (_stem(given) + "_sr.nii.gz"),
                          error=f"{given} looks like DICOM, but holds no series that can be read (damaged or "
                                "not an image)"))
    return found


def _bids(root: Path) -> list[Item]:
    """The anatomical images of a BIDS dataset, written as a derivatives dataset."""
    items = []
    for image in sorted(root.glob("sub-*/anat/*.nii*")) + sorted(root.glob("sub-*/ses-*/anat/*.nii*")):
        entities, _, suffix = _stem(image).rpartition("_")
        rel = image.parent.relative_to(root)
        items.append(Item(str(image), rel / f"{entities}_desc-superres_{suffix}.nii.gz", path=image,
                          bids=True))
    if not items:
        raise MRSuperResError(f"{root} is a BIDS dataset without anatomical images (sub-*/[ses-*]/anat/*.nii*)")
    return items


def _unique(items: list[Item]) -> list[Item]:
    """Distinct output names: a repeated one gets _2, _3, ... in input order."""
    seen: dict[str, int] = {}
    for item in items:
        key = str(item.output).lower()
        if key in seen:
            seen[key] += 1
            name = item.output.name[: -len("_sr.nii.gz")] if item.output.name.endswith("_sr.nii.gz") else item.output.stem
            item.output = item.output.with_name(f"{name}_{seen[key]}_sr.nii.gz")
        else:
            seen[key] = 1
    return items


def shard_of(text: str | None, environ=os.environ) -> tuple[int, int]:
    """(I, N), 1 <= I <= N: --shard I/N, else torchrun's RANK/WORLD_SIZE, else a SLURM array task
    (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT), else (1, 1)."""
    if text is not None:
        try:
            i, n = (int(v) for v in text.split("/"))
        except ValueError:
            raise MRSuperResError(f"--shard takes I/N (e.g. 2/8), not {text!r}") from None
    elif "WORLD_SIZE" in environ and "RANK" in environ:
        i, n = int(environ["RANK"]) + 1, int(environ["WORLD_SIZE"])
    elif "SLURM_ARRAY_TASK_ID" in environ and "SLURM_ARRAY_TASK_COUNT" in environ:
        i = int(environ["SLURM_ARRAY_TASK_ID"]) - int(environ.get("SLURM_ARRAY_TASK_MIN", 0)) + 1
        n = int(environ["SLURM_ARRAY_TASK_COUNT"])
    else:
        return 1, 1
    if not 1 <= i <= n:
        raise MRSuperResError(f"shard {i} of {n} does not exist (I must be 1 to N)")
    return i, n


def in_shard(items: list, index: int, count: int) -> list:
    """The index-th (1-based) of `count` round-robin parts: every item in exactly one part."""
    return items[index - 1::count]


def sidecar_path(output: Path) -> Path:
    return output.with_name(_stem(output) + ".json")


def options_of(args) -> dict:
    return {k: getattr(args, k, None) for k in OPTIONS}


def up_to_date(output: Path, input_sha: str, model: dict, options: dict) -> bool:
    """The output and its sidecar exist and record this input, model and options."""
    side = sidecar_path(output)
    if not (output.exists() and side.exists()):
        return False
    try:
        record = json.loads(side.read_text())
    except (OSError, ValueError):
        return False
    return (record.get("input", {}).get("sha256") == input_sha and record.get("options") == options
            and record.get("model", {}).get("sha256") == model.get("sha256")
            and record.get("model", {}).get("name") == model.get("name"))


def expected_model(models) -> dict:
    """{"name", "sha256"} of the model --model names (a direction's default is known only per volume)."""
    from .cards import model_provenance

    model, _ = models.named()
    return model_provenance(model) if model is not None else {"name": None, "sha256": None}


def run_batch(args) -> int:
    """`mrsuperres enhance` in batch mode; returns the exit status (1 when any input failed)."""
    from . import __version__
    from .enhance_run import Models, enhance_to_files
    from .evaluate import check_out_dir
    from .progress import Progress

    out_dir = check_out_dir(args.output, "-o")
    index, count = shard_of(args.shard)
    items = in_shard(discover(args.input, exclude=out_dir), index, count)
    if os.environ.get("LOCAL_RANK") is not None and args.device in ("auto", "cuda"):
        args.device = f"cuda:{os.environ['LOCAL_RANK']}" if _has_cuda() else args.device
    models = Models(args)
    options = options_of(args)
    rows, t_batch = [], time.perf_counter()
    todo = [i for i in items if i.skip is None]
    print(f"mrsuperres: {len(items)} input(s) in shard {index} of {count}, {len(todo)} to enhance, "
          f"output in {out_dir}", flush=True)
    if any(i.bids for i in items):
        _bids_description(out_dir, __version__)
    done = 0
    for n, item in enumerate(items, 1):
        output = out_dir / item.output
        row = {"input": item.label, "output": str(output), "status": "", "seconds": 0.0, "message": ""}
        t0 = time.perf_counter()
        try:
            if item.skip is not None:
                row.update(status="skipped", message=item.skip)
                continue
            sha = item.sha256()
            if not args.overwrite and is_up_to_date(item, output, sha, options, expected_model(models)):
                row.update(status="up to date", message="output and sidecar match (--overwrite redoes it)")
                continue
            volume = item.read()
            maps_dir = (Path(args.maps) / item.output.parent) if args.maps else None
            facts, _, _ = enhance_to_files(volume, output, args, models, maps_dir=maps_dir,
                                              progress=Progress(f"{n}/{len(items)}"))
            write_sidecar(output, item, sha, facts, options)
            row.update(status="done")
        except (MRSuperResError, OSError) as exc:
            row.update(status="failed", message=str(exc))
            print(f"mrsuperres: error: {item.label}: {exc}", file=sys.stderr, flush=True)
        finally:
            row["seconds"] = round(time.perf_counter() - t0, 2)
            rows.append(row)
            if row["status"] == "done":
                done += 1
            elapsed = time.perf_counter() - t_batch
            left = elapsed / n * (len(items) - n)
            print(f"mrsuperres: {n}/{len(items)} inputs ({row['status']}), {elapsed:.0f} s so far, "
                  f"about {left:.0f} s left", flush=True)
            _write_summary(out_dir, rows, index, count)
    failed = [r for r in rows if r["status"] == "failed"]
    print(f"mrsuperres: {done} enhanced, {sum(r['status'] == 'up to date' for r in rows)} up to date, "
          f"{sum(r['status'] == 'skipped' for r in rows)} skipped, {len(failed)} failed; summary in "
          f"{_summary_path(out_dir, index, count)}", flush=True)
    return 1 if failed else 0


def write_sidecar(output: Path, item: Item, sha: str, facts: dict, options: dict) -> Path:
    """`output`'s JSON sidecar, written atomically once the output is complete: what made it."""
    from . import __version__

    record = {"input": {"path": item.label, "sha256": sha}, "output": output.name,
              "model": {"name": facts["model"]["name"], "sha256": facts["model"].get("sha256")},
              "options": options, "version": __version__, "device": facts["device"],
              "precision": facts["precision"], "engine": facts["engine"], "seconds": facts["seconds"],
              "facts": {k: v for k, v in facts.items() if k not in ("model",)}}
    return atomic_write_bytes(sidecar_path(output), (json.dumps(record, indent=1, default=str) + "\n").encode())


def is_up_to_date(item: Item, output: Path, sha: str, options: dict, model_named: dict | None) -> bool:
    """A rerun's test: with --model, against that model; without, against the default the
    sidecar names (still installed, same sha256)."""
    if model_named is not None and model_named.get("name") is not None:
        return up_to_date(output, sha, model_named, options)
    return _default_up_to_date(output, sha, options)


def _default_up_to_date(output: Path, sha: str, options: dict) -> bool:
    """Without --model: the sidecar names the direction's default model; that file must still be it."""
    from .catalog import read_card, resolve_model

    side = sidecar_path(output)
    if not side.exists():
        return False
    try:
        model = json.loads(side.read_text()).get("model", {})
        card = read_card(resolve_model(model.get("name"), False)) or {}
    except (OSError, ValueError, MRSuperResError):
        return False
    return up_to_date(output, sha, {"name": model.get("name"), "sha256": card.get("sha256")}, options)


def _has_cuda() -> bool:
    import torch
    return torch.cuda.is_available()


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
