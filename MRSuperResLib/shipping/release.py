"""A models release, for the maintainers (scripts/maintainers/release_models.py):

1. the release assets: each shipped model's weights and card, with a SHA256SUMS file, ready to
   attach to the project's release `TAG`;
2. the registry (Resources/Models/registry.json) naming them with their sha256, size, version
   (kept while the weights are the same, raised when they change) and the assets' URLs;
3. the tree the Slicer Extensions Index builds from: the tracked files without any weights file,
   committed into a fresh repository, cloned the way the index clones, and measured against the
   index's rule (every file of a clone under 100 MB in all) and the project's 50 MB goal.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import MRSuperResError
from ..files import atomic_write_bytes, sha256_of
from ..models.registry import REGISTRY_FILE, SCHEMA_VERSION, check_registry
from ..options import PROJECT_DIR, SHIPPED_MODELS_DIR

RELEASES_URL = "https://github.com/mrsuperres/SlicerMRSuperRes/releases/download"
INDEX_LIMIT_BYTES = 100 * 10**6        # scripts/check_description_files.py: check_repository_size
TREE_GOAL_BYTES = 50 * 10**6
LICENCE = "BSD-3-Clause"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".onnx", ".ckpt")


def task_of(card: dict) -> str:
    scale = int(card.get("scale", 4))
    return "through-plane" if scale == 1 else f"in-plane x{scale}"


def build_registry(tag: str, models_dir: Path = SHIPPED_MODELS_DIR, previous: Path | None = REGISTRY_FILE,
                   base_url: str = RELEASES_URL) -> dict:
    """The registry of every model in `models_dir`, its files served from release `tag`."""
    old = {}
    if previous is not None and Path(previous).exists():
        old = {e["name"]: e for e in json.loads(Path(previous).read_text()).get("models", [])}
    models = []
    for weights in sorted(Path(models_dir).glob("*.safetensors")):
        name, card_file = weights.stem, weights.with_suffix(".json")
        if not card_file.exists():
            raise MRSuperResError(f"{weights} has no card: every released model carries one")
        card, sha = json.loads(card_file.read_text()), sha256_of(weights)
        if card.get("sha256") not in (None, sha):
            raise MRSuperResError(f"{weights} does not match its card's sha256")
        before = old.get(name)
        version = (before["version"] if before and before["sha256"] == sha
                   else str(int(before["version"]) + 1) if before else "1")
        urls = [f"{base_url}/{tag}/{weights.name}"] if not before or before["sha256"] != sha else before["urls"]
        models.append({"name": name, "version": version, "task": task_of(card), "scale": int(card.get("scale", 4)),
                       "file": weights.name, "sha256": sha, "size": weights.stat().st_size, "licence": LICENCE,
                       "card": card_file.name, "card_sha256": sha256_of(card_file), "urls": urls,
                       "description": str(card.get("description", ""))[:200]})
    registry = {"schema_version": SCHEMA_VERSION, "release": tag, "models": models}
    check_registry(registry)
    return registry


def write_registry(registry: dict, path: Path = REGISTRY_FILE) -> Path:
    return atomic_write_bytes(path, (json.dumps(registry, indent=1) + "\n").encode())


def build_assets(registry: dict, out: Path, models_dir: Path = SHIPPED_MODELS_DIR) -> Path:
    """The files to attach to the release, and their SHA256SUMS."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sums = []
    for entry in registry["models"]:
        for file, sha in ((entry["file"], entry["sha256"]), (entry["card"], entry["card_sha256"])):
            shutil.copyfile(Path(models_dir) / file, out / file)
            if sha256_of(out / file) != sha:
                raise MRSuperResError(f"{file} changed while the release was made")
            sums.append(f"{sha}  {file}")
    (out / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    return out


def is_weights(path: str) -> bool:
    return path.lower().endswith(WEIGHT_SUFFIXES)


def tracked_files(root: Path = PROJECT_DIR) -> list[str]:
    done = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True)
    return [p for p in done.stdout.decode().split("\0") if p and (root / p).is_file()]


def export_index_tree(dest: Path, root: Path = PROJECT_DIR) -> dict:
    """The tracked files without weights, committed in a new repository at `dest`, then cloned as
    the Extensions Index clones (a full clone) and measured; returns the figures."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise MRSuperResError(f"{dest} is not empty")
    files = [p for p in tracked_files(root) if not is_weights(p)]
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dest / rel)
    git = ["git", "-c", "user.name=MRSuperRes release", "-c", "user.email=release@mrsuperres.invalid"]
    subprocess.run(git + ["init", "-q"], cwd=dest, check=True)
    subprocess.run(git + ["add", "-A"], cwd=dest, check=True)
    subprocess.run(git + ["commit", "-q", "-m", "MRSuperRes extension tree (no weights)"], cwd=dest, check=True)
    with tempfile.TemporaryDirectory(prefix="mrsuperres-index-clone-") as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", "--no-local", str(dest), str(clone)], check=True)
        clone_bytes = sum(p.stat().st_size for p in clone.rglob("*") if p.is_file())
    tree_bytes = sum((dest / p).stat().st_size for p in files)
    return {"files": len(files), "tree_bytes": tree_bytes, "clone_bytes": clone_bytes,
            "weights_left_out": sorted(p for p in tracked_files(root) if is_weights(p)),
            "passes_index_rule": clone_bytes < INDEX_LIMIT_BYTES, "meets_goal": tree_bytes < TREE_GOAL_BYTES}


def main(argv: list[str] | None = None) -> int:
    """`python scripts/maintainers/release_models.py TAG --assets DIR --index-tree DIR`."""
    import argparse

    ap = argparse.ArgumentParser(description="Make a models release: assets, registry, Extensions Index tree.")
    ap.add_argument("tag", help="the release tag the assets are attached to (e.g. models-2026.12)")
    ap.add_argument("--assets", required=True, help="empty folder for the files to attach to the release")
    ap.add_argument("--index-tree", required=True, help="empty folder for the tree the Extensions Index builds")
    args = ap.parse_args(argv)
    registry = build_registry(args.tag)
    write_registry(registry)
    build_assets(registry, Path(args.assets))
    print(f"registry: {REGISTRY_FILE} ({len(registry['models'])} models); assets in {args.assets}: attach them "
          f"to release {args.tag}")
    figures = export_index_tree(Path(args.index_tree))
    print(f"index tree {args.index_tree}: {figures['files']} files, {figures['tree_bytes'] / 1e6:.1f} MB "
          f"(goal under {TREE_GOAL_BYTES / 1e6:.0f} MB), a full clone {figures['clone_bytes'] / 1e6:.1f} MB "
          f"(the index refuses {INDEX_LIMIT_BYTES / 1e6:.0f} MB or more); weights left out: "
          f"{', '.join(Path(p).name for p in figures['weights_left_out']) or 'none'}")
    return 0 if figures["passes_index_rule"] and figures["meets_goal"] else 1

