"""One volume through `mrsuperres enhance`: direction, plan, model, network, and its files (the
output and its maps, all or none). The command line runs it for its one input; a batch
(cohort.py) runs it for every volume, with the models loaded once (`Models`)."""
from __future__ import annotations

import sys
from pathlib import Path

from .errors import MRSuperResError
from .progress import Progress
from .volumes import Volume, stem

MAP_NAMES = ("consistency", "uncertainty", "detail")


class Models:
    """The models a run needs, each loaded and checked once: the one `--model` names, or the
    default of each direction the inputs take."""

    def __init__(self, args):
        self.args, self._loaded = args, {}

    def named(self):
        """(model, card) of --model, or (None, None) when the direction decides."""
        return self.get(self.args.model) if self.args.model else (None, None)

    def get(self, spec: str):
        from .catalog import load_model

        if spec not in self._loaded:
            a = self.args
            self._loaded[spec] = load_model(spec, detail=a.detail, detail_model=a.detail_model)
        return self._loaded[spec]

    def runner(self, model):
        from .inference import SliceEngine
        from .through_plane import check_network

        key = ("runner", id(model))
        if key not in self._loaded:
            a = self.args
            self._loaded[key] = SliceEngine(model, device=a.device, precision=a.precision, compile=a.compile,
                                            engine=a.engine)
            check_network(self._loaded[key])
        return self._loaded[key]


def map_files(output: Path, folder: Path) -> dict[str, Path]:
    """{map: path} in `folder`, named after the output and in its format; refused before any work."""
    from .evaluate import check_out_dir
    from .volumes import check_writable

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
    from .volumes import write_volume

    written = []
    try:
        for path, (volume, dtype) in files.items():
            if not path.parent.exists():
                try:
                    path.parent.mkdir(parents=True)
                except OSError as exc:
                    raise MRSuperResError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
            write_volume(volume, path, dtype=dtype)
            written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def enhance_to_files(volume: Volume, output: Path, args, models: Models, maps_dir: Path | None = None,
                     progress=None) -> tuple[dict, dict, list[Path]]:
    """Enhance `volume` as `args` (enhance's options) say into `output` (and its maps into
    `maps_dir`); prints the plan and what was done. Returns (facts, card, files written)."""
    from .catalog import default_model_for
    from .inference import enhance_volume
    from .through_plane import choose_direction, make_plan, seconds_per_output_voxel

    model, card = models.named()
    direction, axis, why = choose_direction(volume, args.direction, args.axis,
                                            model.scale if model is not None else args.scale)
    if direction == "through-plane" and (args.self_ensemble or args.maps):
        raise MRSuperResError(f"{'--maps' if args.maps else '--self-ensemble'} applies to in-plane "
                              "super-resolution only")
    map_paths = map_files(output, maps_dir) if maps_dir is not None else {}
    make_plan(volume, direction, axis, why, spacing=args.spacing)          # bad --spacing: refused before loading
    if model is None:
        model, card = models.get(default_model_for(direction, args.scale))
    if args.scale and model.scale != args.scale:
        raise MRSuperResError(f"model '{card.get('name')}' is x{model.scale}, not x{args.scale}")
    runner = models.runner(model)
    plan = make_plan(volume, direction, axis, why, model.scale, args.spacing,
                     seconds_per_output_voxel(runner) * (8 if args.self_ensemble or args.maps else 1))
    print(f"mrsuperres: {plan.summary()}", file=sys.stderr)
    for line in plan.warnings:
        print(f"mrsuperres: warning: {line}", file=sys.stderr)
    hr, facts = enhance_volume(volume, model, axis=axis, direction=direction, spacing=args.spacing,
                               batch_size=args.batch_size, tile=args.tile, progress=progress or Progress("enhance"),
                               self_ensemble=args.self_ensemble, consistency=args.consistency,
                               maps=bool(args.maps), runner=runner, plan=plan)
    dtype = volume.meta.get("dtype", "float32") if args.dtype == "input" else "float32"
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
    if "data_consistency" in facts:
        print(describe_consistency(facts))
    for name, path in map_paths.items():
        print(f"{path}: {name} map")
    if args.verbose:
        print(f"precision {facts['precision']} ({facts['engine']}): {facts['precision_why']}")
    return facts, card, written


def describe_consistency(facts: dict) -> str:
    """The per-volume numbers of the maps, as `enhance` prints them (fractions of the input's range)."""
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
