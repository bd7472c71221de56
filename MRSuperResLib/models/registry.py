"""The model registry, Resources/Models/registry.json: every model MRSuperRes offers, by name, with
its version, task, sha256, size, licence, card and download addresses (the project's release
assets). The Slicer extension ships the registry and the cards, not the weights: a model is
downloaded into the user's model folder on first use, checked against its sha256 (download.py).
A source checkout that still holds Resources/Models/NAME.safetensors uses that copy first, so it
works offline. The registry's history is the model history: a new weights file enters it only
with a measured gain over the model it replaces (docs/models.md).

Standard library only: the panel lists the registry before torch is installed.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..errors import MRSuperResError
from ..files import atomic_write_bytes, sha256_of
from ..options import SHIPPED_MODELS_DIR
from .download import download

REGISTRY_FILE = SHIPPED_MODELS_DIR / "registry.json"
REGISTRY_ENV = "MRSUPERRES_MODEL_REGISTRY"  # a site's own registry file, used instead of the shipped one
MIRROR_ENV = "MRSUPERRES_MODEL_MIRROR"      # a base URL serving the release's files, tried first
SCHEMA_VERSION = 1
FIELDS = {"name": str, "version": str, "task": str, "scale": int, "file": str, "sha256": str, "size": int,
          "licence": str, "card": str, "card_sha256": str, "urls": list}
TASK = re.compile(r"^(in-plane x[2-8]|through-plane)$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_registry(data) -> list[dict]:
    """The registry's models after a schema check; the first problem is one clear error."""
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        raise MRSuperResError(f"the model registry is not of schema version {SCHEMA_VERSION}")
    models = data.get("models")
    if not isinstance(models, list) or not models:
        raise MRSuperResError("the model registry lists no models")
    seen = set()
    for i, entry in enumerate(models):
        where = f"model registry entry {i + 1}"
        if not isinstance(entry, dict):
            raise MRSuperResError(f"{where} is not a record")
        for field, kind in FIELDS.items():
            if not isinstance(entry.get(field), kind) or isinstance(entry.get(field), bool):
                raise MRSuperResError(f"{where}: '{field}' must be a {kind.__name__}")
        name = entry["name"]
        if name in seen:
            raise MRSuperResError(f"{where}: '{name}' is listed twice")
        seen.add(name)
        if not TASK.match(entry["task"]) or (entry["task"] == "through-plane") != (entry["scale"] == 1):
            raise MRSuperResError(f"{where} ({name}): task '{entry['task']}' does not fit scale {entry['scale']}")
        if not (SHA256.match(entry["sha256"]) and SHA256.match(entry["card_sha256"])):
            raise MRSuperResError(f"{where} ({name}): a sha256 is not 64 hex digits")
        if entry["file"] != f"{name}.safetensors" or entry["card"] != f"{name}.json" or entry["size"] < 1:
            raise MRSuperResError(f"{where} ({name}): file and card must be {name}.safetensors and {name}.json")
        if not entry["urls"] or not all(isinstance(u, str) and u.startswith(("https://", "http://"))
                                        and u.endswith("/" + entry["file"]) for u in entry["urls"]):
            raise MRSuperResError(f"{where} ({name}): each URL must be http(s) and end in /{entry['file']}")
    return models


def registry_file(environ=os.environ) -> Path:
    return Path(environ.get(REGISTRY_ENV) or REGISTRY_FILE)


def read_registry(path: Path | None = None) -> list[dict]:
    """The registry's models ([] where a copy of MRSuperRes has none)."""
    path = Path(path) if path else registry_file()
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MRSuperResError(f"the model registry {path} is unreadable ({exc})") from None
    return check_registry(data)


def registry_entry(name: str, path: Path | None = None) -> dict | None:
    return next((e for e in read_registry(path) if e["name"] == name), None)


def urls_of(entry: dict, file: str | None = None, environ=os.environ) -> list[str]:
    """Where `file` (default: the weights) of `entry` can be downloaded: the mirror first, then the
    registry's addresses (the card lies beside the weights)."""
    file = file or entry["file"]
    urls = [u[: -len(entry["file"])] + file for u in entry["urls"]]
    mirror = environ.get(MIRROR_ENV, "").strip()
    return ([mirror.rstrip("/") + "/" + file] if mirror else []) + urls


def fetch(name: str, dest_dir: Path, progress=None, cancel=None, registry: Path | None = None,
          environ=os.environ, timeout: float | None = None) -> Path:
    """Download model `name` of the registry into `dest_dir` (card first, then the weights, each
    checked against its sha256 and renamed into place); returns the weights' path."""
    entry = registry_entry(name, registry)
    if entry is None:
        raise MRSuperResError(f"'{name}' is not in the model registry")
    dest_dir = Path(dest_dir)
    target = dest_dir / entry["file"]
    if target.exists() and sha256_of(target) == entry["sha256"] and (dest_dir / entry["card"]).exists():
        return target
    dest_dir.mkdir(parents=True, exist_ok=True)
    extra = {} if timeout is None else {"timeout": timeout}
    card = dest_dir / entry["card"]
    shipped_card = Path(registry or registry_file(environ)).parent / entry["card"]
    if shipped_card.exists() and sha256_of(shipped_card) == entry["card_sha256"]:
        atomic_write_bytes(card, shipped_card.read_bytes())               # the extension ships the cards
    else:
        download(urls_of(entry, entry["card"], environ), card, entry["card_sha256"], cancel=cancel,
                 label=f"the card of {name}", **extra)
    return download(urls_of(entry, environ=environ), target, entry["sha256"], entry["size"], progress=progress,
                    cancel=cancel, label=f"model {name} (version {entry['version']}, {entry['size'] / 2**20:.0f} MB)",
                    **extra)
