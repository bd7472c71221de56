"""The command line `mrsuperres`: argument parsing and commands (commands), enhance over one volume
or a cohort (enhance), and what a batch leaves beside its outputs (sidecars)."""
from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """`mrsuperres ...`: the console script's entry point (MRSuperResLib.cli:main)."""
    from .commands import main as run

    return run(argv)
