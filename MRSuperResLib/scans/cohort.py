"""The scans of a cohort (`discover`): volume files (.nii, .nii.gz, .nrrd, .nhdr), folders (their
volume files and the DICOM series in them and below), globs, and BIDS dataset roots (the
anatomical images under sub-*/[ses-*]/anat), each with the output name it will get. DICOM series
are read by dicom.py; other modalities and localizers are listed as skipped, with the reason.
Sharding (`--shard I/N`, or torchrun's RANK/WORLD_SIZE, or a SLURM array task): the I-th of N
round-robin parts of the sorted input list. The batch run itself is cli.enhance.run_batch, its
sidecars and summary cli.sidecars (docs/cohorts.md).
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import MRSuperResError
from ..files import sha256_of

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr")


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
    items = [Item(str(p), p.parent.relative_to(folder) / (_stem(p) + "_sr.nii.gz"), path=p,
                  error=None if p.exists() else f"{p} is a broken symbolic link (its target {os.readlink(p)} "
                                                "is missing)")
             for p in inside if is_volume_file(p) or (p.is_symlink() and p.name.lower().endswith(VOLUME_SUFFIXES))]
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
    """Distinct output names, decided before any work: the first input keeps its name, a later
    one with the same name gets the first _2, _3, ... that no input's own name is and no earlier
    input took (`a.nrrd` beside `a.nii.gz` and `a_2.nii.gz` becomes a_3_sr). Names compare without
    case, as on Windows and macOS."""
    own = {str(item.output).lower() for item in items}
    taken: set[str] = set()
    for item in items:
        key = str(item.output).lower()
        if key in taken:
            name = item.output.name
            tail = "_sr.nii.gz" if name.endswith("_sr.nii.gz") else ".nii.gz" if name.endswith(".nii.gz") else ""
            base = name[: len(name) - len(tail)] if tail else item.output.stem
            tail = tail or item.output.suffix
            n = 2
            while True:
                candidate = item.output.with_name(f"{base}_{n}{tail}")
                if str(candidate).lower() not in taken | own:
                    break
                n += 1
            item.output, key = candidate, str(candidate).lower()
        taken.add(key)
    return items


def shard_of(text: str | None, environ=os.environ) -> tuple[int, int]:
    """(I, N), 1 <= I <= N: --shard I/N, else torchrun's RANK/WORLD_SIZE, else a SLURM array task
    ((SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP + 1 of
    SLURM_ARRAY_TASK_COUNT: `--array=1-7:3` runs tasks 1, 4, 7 as shards 1, 2, 3), else (1, 1)."""
    if text is not None:
        try:
            i, n = (int(v) for v in text.split("/"))
        except ValueError:
            raise MRSuperResError(f"--shard takes I/N (e.g. 2/8), not {text!r}") from None
        where = f"--shard {text}"
    elif "WORLD_SIZE" in environ and "RANK" in environ:
        i, n = _ints(environ, "RANK", "WORLD_SIZE")
        i, where = i + 1, "torchrun's RANK/WORLD_SIZE"
    elif "SLURM_ARRAY_TASK_ID" in environ and "SLURM_ARRAY_TASK_COUNT" in environ:
        task, count, low, step = _ints(dict({"SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "1"}, **environ),
                                       "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN",
                                       "SLURM_ARRAY_TASK_STEP")
        if step < 1 or (task - low) % step:
            raise MRSuperResError(f"SLURM array task {task} is not on the array's steps ({low}, {low + step}, ...): "
                                  "for a list of task ids give --shard I/N")
        i, n, where = (task - low) // step + 1, count, "the SLURM array"
    else:
        return 1, 1
    if not 1 <= i <= n:
        raise MRSuperResError(f"shard {i} of {n} (from {where}) does not exist (I must be 1 to N); for a SLURM "
                              "array given as a list of task ids, give --shard I/N")
    return i, n


def _ints(environ, *names: str) -> list[int]:
    """The integer values of environment variables, or one line naming the one that is not."""
    values = []
    for name in names:
        try:
            values.append(int(environ[name]))
        except ValueError:
            raise MRSuperResError(f"{name}={environ[name]!r} is not a whole number") from None
    return values


def in_shard(items: list, index: int, count: int) -> list:
    """The index-th (1-based) of `count` round-robin parts: every item in exactly one part."""
    return items[index - 1::count]
