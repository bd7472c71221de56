"""A file cut into parts that each fit a transfer limit, and joined back bit for bit.

Why: a machine lent for a GPU run returns files of at most 16 MiB, and a generator's weights are
about 32 MiB. The manifest (JSON) names every part with its size and sha256 and the whole file's
sha256; `join` checks each part, then the whole, and writes nothing unless all of them match.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import MRSuperResError
from ..files import atomic_write, atomic_write_bytes, sha256_of

MANIFEST_FORMAT = "mrsuperres-split-file"
CHUNK = 1 << 20


def parts_needed(size: int, max_part: int) -> int:
    """How many parts of at most `max_part` bytes a file of `size` bytes is cut into (at least one)."""
    if max_part < 1:
        raise MRSuperResError(f"a part must hold at least one byte, not {max_part}")
    return max(1, -(-size // max_part))


def split_file(path: str | os.PathLike, out_dir: str | os.PathLike, max_part: int, **extra) -> dict:
    """Cut `path` into equal parts of at most `max_part` bytes in `out_dir` (NAME.part1, NAME.part2, ...)
    and write the manifest NAME.manifest.json beside them (with `extra` fields); returns the manifest."""
    path, out_dir = Path(path), Path(out_dir)
    size = path.stat().st_size
    count = parts_needed(size, max_part)
    each = -(-size // count) if size else 0           # equal parts: none is much smaller than the rest
    parts = []
    with open(path, "rb") as src:
        for i in range(1, count + 1):
            data = src.read(each) if i < count else src.read()
            name = f"{path.name}.part{i}"
            atomic_write_bytes(out_dir / name, data)
            parts.append({"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {"format": MANIFEST_FORMAT, "file": path.name, "size": size, "sha256": sha256_of(path),
                "parts": parts, **extra}
    atomic_write_bytes(manifest_path(out_dir, path.name), (json.dumps(manifest, indent=1) + "\n").encode())
    return manifest


def manifest_path(folder: str | os.PathLike, name: str) -> Path:
    return Path(folder) / f"{name}.manifest.json"


def read_manifest(path: str | os.PathLike) -> dict:
    try:
        manifest = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise MRSuperResError(f"cannot read the manifest {path}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise MRSuperResError(f"{path} is not a split-file manifest")
    return manifest


def join_file(manifest_file: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Join the parts named by `manifest_file` (found beside it) into the file `dest`, checking every
    part's size and sha256 before anything is written and the whole file's sha256 before it is kept."""
    manifest_file = Path(manifest_file)
    manifest = read_manifest(manifest_file)
    folder = manifest_file.parent
    for part in manifest["parts"]:
        found = folder / part["name"]
        if not found.exists():
            raise MRSuperResError(f"part {found} is missing")
        if found.stat().st_size != part["size"] or sha256_of(found) != part["sha256"]:
            raise MRSuperResError(f"part {found} does not match its manifest (size or sha256)")

    def write(out) -> None:
        digest = hashlib.sha256()
        for part in manifest["parts"]:
            with open(folder / part["name"], "rb") as f:
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        if digest.hexdigest() != manifest["sha256"]:        # raising here removes the partial file
            raise MRSuperResError(f"the joined parts do not match {manifest['file']}'s sha256")

    return atomic_write(dest, write)
