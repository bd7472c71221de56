"""`mrsuperres enhance`: one volume, or a cohort of them (`run_batch`), through the pipeline.

Per volume (`enhance_to_files`) the direction and the plan are decided once, shown, and handed
to the pipeline with the model's runner; the output and its maps are written all or none. A
batch loads each model once (`Models`), skips inputs whose sidecar matches (cli.sidecars), and
goes on past a failing volume (docs/cohorts.md).
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

from ..engine import working_range
from ..engine.calibration import make_runner, seconds_per_output_voxel
from ..engine.slices import check_network
from ..errors import MRSuperResError
from ..models.cards import model_provenance
from ..models.catalog import default_model_for, load_model, model_scale
from ..options import MAP_NAMES, ORIENTATIONS
from ..pipeline.enhance import check_direction, enhance_volume
from ..pipeline.plan import check_orientations, check_spacing, choose_direction, make_plan
from ..progress import Progress
from ..scans.cohort import discover, in_shard, shard_of
from ..scans import volumes
from ..scans.volumes import Volume, check_out_dir, check_writable, stem
from .sidecars import _bids_description, _summary_path, _write_summary, is_up_to_date, options_of, write_sidecar


class Models:
    """The models a run needs, each loaded and checked once: the one `--model` names, or the
    default of each direction the inputs take."""

    def __init__(self, args):
        self.args, self._loaded = args, {}

    def named(self):
        """(model, card) of --model, or (None, None) when the direction decides."""
        return self.get(self.args.model) if self.args.model else (None, None)

    def get(self, spec: str):
        if spec not in self._loaded:
            a = self.args
            self._loaded[spec] = load_model(spec, detail=a.detail, detail_model=a.detail_model)
        return self._loaded[spec]

    def runner(self, model):
        key = ("runner", id(model))
        if key not in self._loaded:
            a = self.args
            self._loaded[key] = make_runner(model, device=a.device, precision=a.precision, compile=a.compile,
                                            engine=a.engine)
            check_network(self._loaded[key])
        return self._loaded[key]


def maps_folder(maps, beside: Path) -> Path | None:
    """Where enhance writes the maps: `--maps` alone, beside the output; `--maps DIR`, into DIR."""
    if not maps:
        return None
    return beside if maps is True else Path(maps)


def map_files(output: Path, folder: Path) -> dict[str, Path]:
    """{map: path} in `folder`, named after the output and in its format; refused before any work."""
    check_out_dir(folder, "--maps")
    suffix = ".nii.gz" if str(output).lower().endswith(".nii.gz") else Path(output).suffix
    paths = {m: Path(folder) / f"{stem(output)}_{m}{suffix}" for m in MAP_NAMES}
    for path in paths.values():
        if Path(folder).is_dir():
            check_writable(path)
    return paths


def write_all(files: dict) -> list[Path]:
    """{path: (volume, dtype)} written one by one (each atomically); if any fails, the ones
    already written by this call are removed again, so a run leaves all its files or none."""
    written, made = [], []
    try:
        for path, (volume, dtype) in files.items():
            if not path.parent.exists():
                made.append(next(p for p in reversed([path.parent, *path.parent.parents]) if not p.exists()))
                try:
                    path.parent.mkdir(parents=True)
                except OSError as exc:
                    raise MRSuperResError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
            volumes.write_volume(volume, path, dtype=dtype)
            written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        for folder in made:                     # folders made for these files, where empty again
            for root, _, _ in os.walk(folder, topdown=False):
                with contextlib.suppress(OSError):
                    os.rmdir(root)
        raise
    return written


def enhance_to_files(volume: Volume, output: Path, args, models: Models, maps_dir: Path | None = None,
                     progress=None) -> tuple[dict, dict, list[Path]]:
    """Enhance `volume` as `args` (enhance's options) say into `output` (and its maps into
    `maps_dir`); prints the plan and what was done. Returns (facts, card, files written).
    The direction and the plan are decided here, once, before the weights are loaded."""
    model, card = models.named()
    direction, axis, why = choose_direction(volume, args.direction, args.axis,
                                            model.scale if model is not None else args.scale)
    check_direction(direction, args.self_ensemble)
    map_paths = map_files(output, maps_dir) if maps_dir is not None else {}
    check_spacing(volume, direction, axis, args.spacing)                    # before a model is looked up
    spec = None if model is not None else default_model_for(direction, args.scale)
    scale = model.scale if model is not None else (args.scale or model_scale(spec))
    dtype = volume.meta.get("dtype", "float32") if args.dtype == "input" else "float32"
    orientations = None if args.orientations == ORIENTATIONS[0] else int(args.orientations)
    if direction == "through-plane":
        check_orientations(orientations, bool(args.maps))
    plan = make_plan(volume, direction, axis, why, scale, args.spacing, dtype=dtype,     # refused before loading
                     orientations=orientations or (2 if args.maps else None))
    if model is None:
        model, card = models.get(spec)
    if args.scale and model.scale != args.scale:
        raise MRSuperResError(f"model '{card.get('name')}' is x{model.scale}, not x{args.scale}")
    runner = models.runner(model)
    plan.timed(seconds_per_output_voxel(runner) * (8 if args.self_ensemble or (args.maps and direction == "in-plane")
                                                    else 1))
    print(f"mrsuperres: {plan.summary()}", file=sys.stderr)
    for line in plan.warnings:
        print(f"mrsuperres: warning: {line}", file=sys.stderr)
    hr, facts = enhance_volume(volume, model, batch_size=args.batch_size, tile=args.tile,
                               progress=progress or Progress("enhance"),
                               self_ensemble=args.self_ensemble, consistency=args.consistency,
                               maps=bool(args.maps), runner=runner, plan=plan, profile=args.profile)
    map_paths = {name: path for name, path in map_paths.items() if name in hr.maps}
    written = write_all({Path(output): (hr, dtype),
                         **{path: (hr.maps[name], "float32") for name, path in map_paths.items()}})
    sp = hr.spacing
    how = (f"through-plane x{facts['factor']:.3g} across {facts['axis_name']} slices"
           if facts["direction"] == "through-plane" else f"x{facts['scale']} along {facts['axis_name']} slices")
    print(f"{output}: {facts['input_shape']} -> {facts['output_shape']} voxels, spacing "
          f"{sp[0]:.4g} x {sp[1]:.4g} x {sp[2]:.4g} mm, {how}, "
          f"model {card.get('name')}{' (self-ensemble x8)' if facts['self_ensemble'] else ''}"
          f"{'' if facts['direction'] == 'through-plane' else ', consistency ' + facts['consistency']}, "
          f"{facts['slices']} slices in {facts['seconds']:.1f} s on {facts['device']} "
          f"({facts['precision']}{', OpenVINO' if facts['engine'] == 'openvino' else ''})")
    if stretched := working_range.describe(facts.get("network_ceiling", 1.0)):
        print(f"intensity: {stretched}")
    if "data_consistency" in facts:
        print(describe_consistency(facts))
    for name, path in map_paths.items():
        print(f"{path}: {name} map")
    if args.verbose:
        print(f"precision {facts['precision']} ({facts['engine']}): {facts['precision_why']}")
    return facts, card, written


def describe_consistency(facts: dict) -> str:
    """The per-volume numbers of the maps, as `enhance` prints them (fractions of the input's range)."""
    if facts["direction"] == "through-plane":
        d, u = facts["data_consistency"]["network"], facts["uncertainty"]
        return (f"data consistency: the output re-acquired ({facts['reacquired_with']}) departs from the input by "
                f"RMS {100 * d['rms']:.2f}% of its range, {100 * d['share_above']:.1f}% of voxels with signal by more "
                f"than {100 * d['threshold']:.0f}%; uncertainty (spread of the two orientations): mean "
                f"{100 * u['mean']:.2f}%, 99th percentile {100 * u['p99']:.2f}% of the range")
    d, out = facts["data_consistency"]["network"], facts["data_consistency"]["output"]
    line = (f"data consistency: the network's output re-acquired (box average per input voxel) departs from the "
            f"input by RMS {100 * d['rms']:.2f}% of its range, {100 * d['share_above']:.1f}% of voxels with signal "
            f"by more than {100 * d['threshold']:.0f}%; after --consistency {facts['consistency']}: RMS "
            f"{100 * out['rms']:.2f}%, {100 * out['share_above']:.1f}%")
    if "uncertainty" in facts:
        u = facts["uncertainty"]
        line += (f"; uncertainty (spread over the 8 passes): mean {100 * u['mean']:.2f}%, "
                 f"99th percentile {100 * u['p99']:.2f}% of the range")
    if "detail_spread" in facts:
        d = facts["detail_spread"]
        line += (f"; detail spread (|GAN - fidelity| / 2): mean {100 * d['mean']:.2f}%, "
                 f"99th percentile {100 * d['p99']:.2f}%")
    return line


def expected_model(models) -> dict:
    """{"name", "sha256"} of the model --model names (a direction's default is known only per volume)."""
    model, _ = models.named()
    return model_provenance(model) if model is not None else {"name": None, "sha256": None}


def run_batch(args) -> int:
    """`mrsuperres enhance` in batch mode; returns the exit status (1 when any input failed)."""
    from .. import __version__

    out_dir = check_out_dir(args.output, "-o")
    for given in args.input:
        if Path(given).is_dir() and Path(given).resolve() == out_dir.resolve():
            raise MRSuperResError(f"-o {out_dir} is the input folder {given}: write into another folder (a "
                                  "subfolder of it is fine)")
    index, count = shard_of(args.shard)
    found = discover(args.input, exclude=out_dir)
    if not found:
        raise MRSuperResError(f"no volume found in {' '.join(args.input)} (.nii, .nii.gz, .nrrd, .nhdr files, "
                              "DICOM series or a BIDS dataset)")
    items = in_shard(found, index, count)
    if os.environ.get("LOCAL_RANK") is not None and args.device in ("auto", "cuda"):
        args.device = f"cuda:{os.environ['LOCAL_RANK']}" if _has_cuda() else args.device
    models = Models(args)
    options = options_of(args)
    rows, t_batch = [], time.perf_counter()
    maps_root = maps_folder(args.maps, out_dir)           # --maps alone: beside the outputs
    checked = {id(item): check_item(item, out_dir, args, options, models) for item in items if item.skip is None}
    todo = [i for i in items if i.skip is None and checked[id(i)][1] is not True]
    print(f"mrsuperres: {len(items)} input(s) in shard {index} of {count}, {len(todo)} to enhance, "
          f"output in {out_dir}", flush=True)
    if any(i.bids for i in items):
        _bids_description(out_dir, __version__)
    done = 0
    for n, item in enumerate(items, 1):
        output = out_dir / item.output
        row = {"input": item.label, "output": str(output), "status": "", "seconds": 0.0, "message": ""}
        t0 = time.perf_counter()
        try:
            if item.skip is not None:
                row.update(status="skipped", message=item.skip)
                continue
            sha, fresh = checked[id(item)]
            if isinstance(fresh, Exception):
                raise fresh
            if fresh:
                row.update(status="up to date", message="output and sidecar match (--overwrite redoes it)")
                continue
            volume = item.read()
            maps_dir = maps_root / item.output.parent if maps_root is not None else None
            facts, _, written = enhance_to_files(volume, output, args, models, maps_dir=maps_dir,
                                                 progress=Progress(f"{n}/{len(items)}"))
            write_sidecar(output, item, sha, facts, options, written)
            row.update(status="done")
        except (MRSuperResError, OSError) as exc:
            row.update(status="failed", message=str(exc))
            print(f"mrsuperres: error: {item.label}: {exc}", file=sys.stderr, flush=True)
        except BaseException:                   # Ctrl-C, SIGTERM: the summary says where it stopped
            row.update(status="interrupted", message="the run was stopped; a rerun does this input")
            raise
        finally:
            row["seconds"] = round(time.perf_counter() - t0, 2)
            rows.append(row)
            if row["status"] == "done":
                done += 1
            elapsed = time.perf_counter() - t_batch
            left = elapsed / n * (len(items) - n)
            print(f"mrsuperres: {n}/{len(items)} inputs ({row['status']}), {elapsed:.0f} s so far, "
                  f"about {left:.0f} s left", flush=True)
            _write_summary(out_dir, rows, index, count)
    failed = [r for r in rows if r["status"] == "failed"]
    print(f"mrsuperres: {done} enhanced, {sum(r['status'] == 'up to date' for r in rows)} up to date, "
          f"{sum(r['status'] == 'skipped' for r in rows)} skipped, {len(failed)} failed; summary in "
          f"{_summary_path(out_dir, index, count)}", flush=True)
    return 1 if failed else 0


def check_item(item, out_dir: Path, args, options: dict, models: Models) -> tuple:
    """(input sha256, True when its output is up to date), found before the batch announces what it
    will do; (None, the error) for an input that cannot be read, which then fails in its turn."""
    try:
        sha = item.sha256()
        return sha, not args.overwrite and is_up_to_date(item, out_dir / item.output, sha, options,
                                                         expected_model(models))
    except (MRSuperResError, OSError) as exc:
        return None, exc


def _has_cuda() -> bool:
    import torch
    return torch.cuda.is_available()
