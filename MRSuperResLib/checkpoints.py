"""Training checkpoints: written atomically, the last few kept, the newest valid one found.

A checkpoint is `RUN/checkpoints/ckpt_<iter>.pt`, a `torch.save` of plain containers and
tensors (read back with `weights_only=True`): generator, EMA, discriminator, both optimisers,
the grad scaler, iteration, RNG states, wall time and the options. It is written to a hidden
temporary file in the same folder, fsynced, then renamed, so a kill during saving leaves the
previous checkpoints intact and at worst a `.partial` file that is ignored and cleaned up.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from .files import atomic_write

FORMAT = "mrsuperres-train-checkpoint"
_NAME = re.compile(r"^ckpt_(\d{8})\.pt$")


def checkpoint_dir(run: Path) -> Path:
    return Path(run) / "checkpoints"


def list_checkpoints(run: Path) -> list[Path]:
    """Checkpoint files, newest (highest iteration) first."""
    folder = checkpoint_dir(run)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)), reverse=True)


def save_checkpoint(run: Path, iteration: int, state: dict, keep: int = 3) -> Path:
    folder = checkpoint_dir(run)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"ckpt_{iteration:08d}.pt"
    atomic_write(target, lambda f: torch.save({"format": FORMAT, **state, "iter": iteration, "complete": True}, f))
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
        os.fsync(dir_fd)
        os.close(dir_fd)
    except OSError:
        pass
    for old in list_checkpoints(run)[keep:]:
        old.unlink(missing_ok=True)
    return target


def remove_partials(run: Path) -> None:
    folder = checkpoint_dir(run)
    if folder.is_dir():
        for p in folder.glob(".ckpt_*.partial"):
            p.unlink(missing_ok=True)


def read_checkpoint(path: Path) -> dict:
    """One checkpoint file, tensors only; raises if it is not a complete training checkpoint."""
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT or not state.get("complete"):
        raise ValueError("not a complete MRSuperRes training checkpoint")
    return state


def load_latest(run: Path, warn=None) -> tuple[dict, Path] | None:
    """The newest checkpoint that loads and is complete; corrupt ones are reported and skipped."""
    for path in list_checkpoints(run):
        try:
            return read_checkpoint(path), path
        except Exception as exc:  # truncated zip, bad pickle, wrong content
            if warn:
                warn(f"checkpoint {path.name} is unreadable ({type(exc).__name__}: "
                     f"{' '.join(str(exc).split())[:120]}); falling back to the previous one")
    return None
