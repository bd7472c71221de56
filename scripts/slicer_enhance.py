"""Batch enhancement in Slicer or slicer-core, from a source checkout: MRSuperResLib.in_slicer.batch.

    Slicer --no-main-window --python-script scripts/slicer_enhance.py -- --input T1.nii.gz --output out
    python scripts/slicer_enhance.py --input T1.nii.gz --output out           # slicer-core, no app

`Slicer --python-script` does not end by itself: every path out of this script, a failure to
import the library included, ends the process with an exit status.
"""
import sys
from pathlib import Path


def _give_up(exc: BaseException) -> None:
    print(f"mrsuperres: the batch could not start: {type(exc).__name__}: {exc}", file=sys.stderr)
    try:
        import slicer
        if hasattr(slicer, "app"):
            slicer.util.exit(1)
    except Exception:
        pass
    sys.exit(1)


try:
    ROOT = Path(__file__).resolve().parent.parent
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from MRSuperResLib.in_slicer.batch import main
except BaseException as exc:                  # a broken install, a missing package: one line, exit 1
    _give_up(exc)

if __name__ == "__main__":
    main(exit=True)
