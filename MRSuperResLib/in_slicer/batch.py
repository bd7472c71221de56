"""Enhance volumes without the GUI: in Slicer's batch mode, or in plain Python with slicer-core.

Installed with the extension (as MRSuperResLib/in_slicer/batch.py) and in a checkout:

    Slicer --no-main-window --python-code "import MRSuperResLib.in_slicer.batch as b; \
        b.main(['--input', 'T1.nii.gz', 'T2.nrrd', '--output', 'out'], exit=True)"
    Slicer --no-main-window --python-script MRSuperResLib/in_slicer/batch.py -- --input T1.nii.gz --output out
    python -m MRSuperResLib.in_slicer.batch --input T1.nii.gz --output out          # slicer-core, no app

Inputs are what `mrsuperres enhance` takes in a batch (cohort.py): files, folders, globs, DICOM
series and BIDS datasets. Each volume file is loaded by Slicer's own volume reader (a DICOM
series by dicom.py), enhanced by MRSuperResLogic, and written as OUT/<name>_sr.nii.gz (BIDS: the
derivatives names) atomically, with the JSON sidecar `mrsuperres enhance` writes; a rerun skips
inputs that are up to date (--overwrite redoes them), and --shard I/N (or torchrun's or SLURM's
environment) takes one part. It always ends, also inside Slicer (where a script does
not end by itself): 0 when every input was enhanced, 1 after any failure, each failure one line
on stderr, the other inputs still processed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __name__ == "__main__" and __package__ in (None, ""):     # run by path: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def problem(exc: BaseException) -> str:
    """One line for anything that can go wrong in a batch job."""
    if isinstance(exc, KeyboardInterrupt):
        return "cancelled"
    if isinstance(exc, ImportError):
        return (f"{exc} (in Slicer: install the PyTorch extension and open the MRSuperRes module once; "
                "in Python: pip install mrsuperres)")
    from MRSuperResLib.in_slicer.jobs import message_of       # imports no torch: safe when torch is missing

    return message_of(exc)


def enhance_all(args) -> int:
    import slicer

    from MRSuperResLib.models.cards import model_provenance
    from MRSuperResLib.models.catalog import load_model
    from MRSuperResLib.cli.sidecars import is_up_to_date, options_of, write_sidecar
    from MRSuperResLib.scans.cohort import discover, in_shard, shard_of
    from MRSuperResLib.in_slicer.logic import MRSuperResLogic
    from MRSuperResLib.in_slicer.nodes import add_volume_node, volume_from_node
    from MRSuperResLib.in_slicer.scene import headless_scene, load_volume
    from MRSuperResLib.scans.volumes import write_volume

    if getattr(slicer, "mrmlScene", None) is None:
        headless_scene()
    out = Path(args.output)                   # made by the first output written: bad input leaves no folder
    logic = MRSuperResLogic()
    failures = 0
    options = dict(options_of(args), model=args.model)
    for item in in_shard(discover(args.input, exclude=out), *shard_of(args.shard)):
        made = []
        try:
            if item.skip is not None:
                print(f"mrsuperres: {item.label}: skipped: {item.skip}", file=sys.stderr)
                continue
            target = out / item.output
            sha = item.sha256()
            if not args.overwrite and is_up_to_date(item, target, sha, options, None if args.model is None
                                                     else model_provenance(load_model(args.model)[0])):
                print(f"{item.label}: up to date ({target})")
                continue
            if item.series is not None:
                made.append(add_volume_node(item.read(), item.output.name.replace("_sr.nii.gz", "")))
            else:
                made.append(load_volume(item.path))
            made.append(logic.enhance(made[0], model=args.model, axis=args.axis, device=args.device, show=False,
                                      direction=args.direction, consistency=args.consistency,
                                      selfEnsemble=args.self_ensemble))
            target.parent.mkdir(parents=True, exist_ok=True)
            write_volume(volume_from_node(made[1], "result"), target)
            write_sidecar(target, item, sha, json.loads(made[1].GetAttribute("MRSuperRes.facts")), options, [target])
            print(f"{item.label} -> {target}")
        except Exception as exc:              # one input's failure: say so, go on with the others
            print(f"mrsuperres: {item.label}: {problem(exc)}", file=sys.stderr)
            failures += 1
        finally:
            for node in made:
                if node is not None and slicer.mrmlScene.IsNodePresent(node):
                    slicer.mrmlScene.RemoveNode(node)
    return 1 if failures else 0


def main(argv: list[str] | None = None, exit: bool = False) -> int:
    """Enhance every --input into --output; returns 0 or 1, or with `exit` ends the process with it
    (what a batch run inside Slicer needs: a --python-script or --python-code does not end by itself).
    Without `argv`, the arguments after `--` on the command line (or all of them)."""
    if argv is None:
        argv = sys.argv[1:]
        argv = argv[argv.index("--") + 1:] if "--" in argv else argv
    code = _run(argv)
    if exit:
        finish(code)
    return code


def _run(argv: list[str]) -> int:
    from MRSuperResLib.options import (CONSISTENCY_DEFAULT, CONSISTENCY_MODES, DIRECTION_DEFAULT, DIRECTIONS,
                                       MRI_DEFAULT_MODEL)

    parser = argparse.ArgumentParser(prog="slicer_batch", description=__doc__.splitlines()[0])
    parser.add_argument("--input", nargs="+", required=True,
                        help="volumes to enhance (.nii, .nii.gz, .nrrd), folders, globs, DICOM series or BIDS datasets")
    parser.add_argument("--output", required=True, help="output folder (made if missing)")
    parser.add_argument("--model", default=None, help=f"model name or weights file (default: {MRI_DEFAULT_MODEL})")
    parser.add_argument("--axis", default="auto", help="slice axis: auto, 0, 1 or 2 (default: auto)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--direction", default=DIRECTION_DEFAULT, choices=DIRECTIONS,
                        help="as for mrsuperres enhance (default: auto)")
    parser.add_argument("--consistency", default=CONSISTENCY_DEFAULT, choices=CONSISTENCY_MODES,
                        help="as for mrsuperres enhance (default: auto)")
    parser.add_argument("--self-ensemble", action="store_true", help="as for mrsuperres enhance")
    parser.add_argument("--overwrite", action="store_true", help="as for mrsuperres enhance: redo inputs up to date")
    parser.add_argument("--shard", default=None, metavar="I/N", help="as for mrsuperres enhance")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:                 # --help (0) or bad arguments (argparse printed why)
        return 0 if exc.code == 0 else 1
    try:
        return enhance_all(args)
    except BaseException as exc:              # torch missing, out of memory, Ctrl-C: one line, exit 1
        print(f"mrsuperres: {problem(exc)}", file=sys.stderr)
        return 1


def finish(code: int) -> None:
    """Exit on every path: inside Slicer through slicer.util.exit, else sys.exit."""
    try:
        import slicer
        if hasattr(slicer, "app"):
            slicer.util.exit(code)
    except ImportError:
        pass
    sys.exit(code)



if __name__ == "__main__":
    main(exit=True)
