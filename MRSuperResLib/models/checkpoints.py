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

from ..files import atomic_write

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
    return sorted(found, key=checkpoint_iteration, reverse=True)


def checkpoint_iteration(path: Path) -> int:
    """The iteration a checkpoint file (`ckpt_<iter>.pt`) was saved at."""
    return int(_NAME.match(Path(path).name).group(1))


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
    from .weights import check_finite

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT or not state.get("complete"):
        raise ValueError("not a complete MRSuperRes training checkpoint")
    for part in ("generator", "ema", "discriminator"):      # damaged weights: not a run to resume from
        if isinstance(state.get(part), dict):
            check_finite(state[part], f"its {part}")
    return state


def load_latest(run: Path, warn=None) -> tuple[dict, Path] | None:
    """The newest checkpoint that loads and is complete. Each corrupt one skipped is passed to
    `warn` as one line naming it and the checkpoint used instead, so a fallback is never silent."""
    skipped = []
    found = None
    for path in list_checkpoints(run):
        try:
            found = read_checkpoint(path), path
            break
        except Exception as exc:  # truncated zip, bad pickle, wrong content
            detail = " ".join(str(exc).split()).split(". ")[0][:120]       # torch's first sentence says it
            skipped.append((path, f"{type(exc).__name__}: {detail}"))
    instead = (f"using {found[1].name} (iteration {checkpoint_iteration(found[1])}) instead" if found
               else "no older valid checkpoint")
    for path, why in skipped if warn else ():
        warn(f"checkpoint {path} is unreadable ({why}); {instead}")
    return found


def checkpoint_generator(run: Path, checkpoint: int | None = None, weights: str = "generator"):
    """(model, card) of the raw generator (or the EMA, weights="ema") in the run's checkpoint at
    iteration `checkpoint` (default: the newest valid one); the card is the run's, with that
    checkpoint's iteration, wall time, learning-rate schedule and validation (a run still going has
    no card yet: then only the name and the checkpoint's record). Why: a short fine-tune's EMA
    lags behind its raw generator, so the next stage may start from that instead."""
    from .cards import checkpoint_card, read_card
    from ..errors import MRSuperResError
    from .weights import build_generator

    run = Path(run)
    card = read_card(run / "model.safetensors") or {"name": run.name}
    if checkpoint is None:
        found = load_latest(run)
        if found is None:
            raise MRSuperResError(f"{run}: no valid checkpoint")
        state, ckpt = found
    else:
        ckpt = checkpoint_dir(run) / f"ckpt_{checkpoint:08d}.pt"
        try:
            state = read_checkpoint(ckpt)
        except Exception as exc:        # missing, truncated or not a training checkpoint
            raise MRSuperResError(f"{ckpt}: {' '.join(str(exc).split())[:160]}") from None
    model = build_generator(state["generator" if weights == "generator" else "ema"], source=str(ckpt))
    what = "raw generator" if weights == "generator" else f"EMA generator (decay {state['config'].get('ema_decay')})"
    return model, checkpoint_card(card, iterations=state["iter"], wall_seconds=state["wall_seconds"],
                                  weights=f"{what} of {run.name}/{ckpt.name}",
                                  learning_rate_schedule=state.get("lr_schedule"), validation=state.get("validation"))
