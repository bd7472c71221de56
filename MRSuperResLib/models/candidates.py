"""Any network by one name, for the maintainers' scripts that rank candidates before a model
ships: a shipped or cached model, a weights file, or a training checkpoint (RUN:ITER:ema|generator)."""
from __future__ import annotations

from pathlib import Path

from .catalog import load_model
from .checkpoints import checkpoint_generator


def load_network(spec: str):
    """A network for the scripts that compare candidates, rounded to fp16 as a model ships: a
    shipped or cached model name, a weights file, or RUN:ITER:ema|generator (a training checkpoint)."""
    parts = spec.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2] in ("ema", "generator"):
        model = checkpoint_generator(Path(parts[0]), int(parts[1]), parts[2])[0]
    else:
        model = load_model(spec, fetch_default=False)[0]
    return model.half().float().eval()
