"""Enhance volumes without the GUI, in Slicer or in plain Python with slicer-core.

    Slicer --no-main-window --python-script scripts/slicer_enhance.py -- \
        --input T1.nii.gz [T2.nrrd ...] --output OUT_DIR [--model mri-x4-fidelity] [--axis auto] [--device auto]
    python scripts/slicer_enhance.py --input T1.nii.gz --output OUT_DIR      # slicer-core, no app

Each input is loaded by Slicer's own volume reader, enhanced by MRSuperResLogic, and written
as OUT_DIR/<name>_sr.nii.gz (atomically). Exit status 0, or 2 with one line per failure.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for folder in (ROOT, ROOT / "MRSuperRes"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def main(argv: list[str]) -> int:
    import slicer

    from MRSuperResLib.errors import MRSuperResError
    from MRSuperResLib.slicer_logic import MRSuperResLogic, headless_scene, load_volume, volume_from_node
    from MRSuperResLib.volumes import write_volume

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", nargs="+", required=True)
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--model", default=None)
    parser.add_argument("--axis", default="auto")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if not hasattr(slicer, "app"):
        headless_scene()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    logic = MRSuperResLogic()
    failures = 0
    for path in args.input:
        try:
            node = load_volume(path)
            sr = logic.enhance(node, model=args.model, axis=args.axis, device=args.device, show=False)
            target = out / f"{Path(path).name.split('.')[0]}_sr.nii.gz"
            write_volume(volume_from_node(sr, "result"), target)
            print(f"{path} -> {target}")
            for n in (node, sr):
                slicer.mrmlScene.RemoveNode(n)
        except MRSuperResError as exc:
            print(f"mrsuperres: {path}: {exc}", file=sys.stderr)
            failures += 1
    return 2 if failures else 0


if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--" in argv:
        argv = argv[argv.index("--") + 1:]
    code = main(argv)
    try:
        import slicer
        if hasattr(slicer, "app"):
            slicer.util.exit(code)
    except ImportError:
        pass
    sys.exit(code)
