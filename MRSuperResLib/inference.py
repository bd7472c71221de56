"""Running the generator over slices, and over whole volumes with exact geometry.

Volume in -> per-volume min-max to [0, 1] -> slices perpendicular to the axis, streamed in
batches through the network -> clipped to [0, 1] -> held to the input (`consistency`: anchored to
its local brightness by default, or projected to reproduce it exactly) -> back to the input's
intensity units -> volume out on the HR grid of `geometry.resample_affine`, with the consistency
map (and, from the 8 self-ensemble passes, the uncertainty map) on the same grid when asked.

Speed: batches sized to memory, channels_last, `torch.inference_mode`, the precision measured
fastest on this machine (`precision="auto"`, see `calibration`), pinned memory and asynchronous
copies on CUDA, optional `torch.compile`. Constant slices (air above and below the head) are
run once per distinct value and copied, which is exact. Memory: a slice too large for the
budget is cut into overlapping tiles blended with linear ramps (no seams); on out-of-memory the
batch, then the tile, is halved and retried, and a CUDA run falls back to the CPU with a message.
fp32 is the reference every fast path is tested against.
Device and precision choice live in `devices`.
"""
from __future__ import annotations

import sys
import time
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from . import consistency as consistency_step
from . import geometry
from .cards import model_provenance
from .devices import autocast, select_device, use_all_cores
from .errors import Cancelled, MRSuperResError
from .rrdbnet import RRDBNet
from .volumes import Volume, check_voxels, denormalise, intensity_range, normalise

MIN_SLICE = 8                    # smallest in-plane LR size (voxels) the network is run on
LR_PIXELS_PER_BATCH = 1 << 16    # LR pixels per forward pass (one 256x256 slice): ~0.7 GB of bf16 activations
TILE_OVERLAP = 8                 # LR pixels shared by neighbouring tiles, blended linearly
TILE_CONTEXT = 32                # LR pixels of slice around a tile that the network also sees
MIN_TILE = 32                    # smallest tile the out-of-memory back-off goes down to
ACCURACY_DB = 45.0               # every fast path must agree with fp32 at least this well (PSNR on [0, 1])

ProgressCallback = Callable[[int, int], None]   # (slices done, slices in all)


def _is_cancelled(cancel) -> bool:
    if cancel is None:
        return False
    return bool(cancel.is_set() if hasattr(cancel, "is_set") else cancel())


def _is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return (isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate" in text
            or "bad_alloc" in text)                      # OpenVINO's CPU plugin


def _ramp(length: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    """Blend weights along one tile axis: rising over the overlap unless at the slice edge."""
    w = np.ones(length, dtype=np.float32)
    if overlap > 0:
        ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        if not first:
            w[:overlap] = ramp
        if not last:
            w[-overlap:] = ramp[::-1]
    return w


def tile_starts(size: int, tile: int, overlap: int, multiple: int) -> list[int]:
    """Start offsets of tiles of `tile` pixels covering `size` with at least `overlap` shared."""
    if tile >= size:
        return [0]
    step = max(multiple, (tile - overlap) // multiple * multiple)
    starts = list(range(0, size - tile, step)) + [size - tile]
    return sorted(set(starts))


class SliceEngine:
    """A generator made ready for fast inference on one device at one precision."""

    def __init__(self, model: RRDBNet, device: str | torch.device = "auto", precision: str = "auto",
                 compile: bool = False, notify: Callable[[str], None] | None = None, engine: str = "auto"):
        from .calibration import choose

        self.device = device if isinstance(device, torch.device) else select_device(device)
        self.notify = notify or (lambda text: print(f"mrsuperres: {text}", file=sys.stderr))
        if self.device.type == "cpu":
            use_all_cores()
        self.scale = model.scale
        self.multiple = model.input_multiple
        self._model = model
        self._place(compile)
        self._adopt(choose(model, self.device, precision, notify=self.notify, engine=engine))   # auto: measured

    def _adopt(self, choice) -> None:
        """Run at `choice`'s precision, through OpenVINO where it chose that engine."""
        self.choice, self.precision, self.engine = choice, choice.precision, choice.engine
        self._ov = None
        if self.engine == "openvino":
            from .openvino_engine import OpenVINONetwork
            self._ov = OpenVINONetwork(self._model, self.precision, threads=torch.get_num_threads(),
                                       notify=self.notify)

    def _place(self, compile: bool) -> None:
        self.model = self._model.to(self.device).eval().to(memory_format=torch.channels_last)
        self.eager = self.model
        self.compiled = False
        self._verify_compiled = False
        if compile:
            try:
                self.model = torch.compile(self.model, dynamic=False)
                self.compiled = self._verify_compiled = True
            except Exception as exc:      # compile is optional: never fail a run for it
                self.notify(f"torch.compile is unavailable here ({exc}); running eagerly")

    def _run(self, t: torch.Tensor) -> torch.Tensor:
        """The network on one batch; a compiled network's first result is checked against the
        eager one (some torch versions miscompile under autocast) and dropped if they differ."""
        if not self._verify_compiled:
            return self.model(t)
        self._verify_compiled = False
        try:
            y = self.model(t)
        except Exception as exc:
            self.notify(f"torch.compile failed ({type(exc).__name__}); running eagerly")
            self.model, self.compiled = self.eager, False
            return self.model(t)
        ref = self.eager(t)
        mse = float(((y.float().clamp(0, 1) - ref.float().clamp(0, 1)) ** 2).mean())
        if mse > 10 ** (-ACCURACY_DB / 10):
            self.notify(f"torch.compile's output differs from the eager network ({-10 * np.log10(max(mse, 1e-30)):.1f} dB "
                        f"< {ACCURACY_DB} dB); running eagerly")
            self.model, self.compiled = self.eager, False
            return ref
        return y

    def fall_back_to_cpu(self, reason: str) -> None:
        self.notify(f"{reason} on {self.device}; continuing on the CPU (slower)")
        from .calibration import choose

        self.device = torch.device("cpu")
        use_all_cores()
        self._place(False)
        self._adopt(choose(self._model, self.device, "auto", notify=self.notify))
        torch.cuda.empty_cache()

    def forward(self, x: np.ndarray) -> np.ndarray:
        """(B, h, w) float32 [0, 1] -> (B, h s, w s) float32 clipped to [0, 1], any h, w >= MIN_SLICE."""
        b, h, w = x.shape
        s, m = self.scale, self.multiple
        pad_h, pad_w = (-h) % m, (-w) % m
        if self._ov is not None:                        # OpenVINO: numpy in, numpy out, same checks
            if pad_h or pad_w:
                x = np.pad(x, ((0, 0), (0, pad_h), (0, pad_w)), mode="edge")      # = torch's replicate
            return self._finish(torch.from_numpy(self._ov(x[:, None]))[:, 0, : h * s, : w * s])
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[:, None]
        cuda = self.device.type == "cuda"
        if cuda:
            t = t.pin_memory().to(self.device, non_blocking=True)
        with torch.inference_mode(), autocast(self.device, self.precision):
            if pad_h or pad_w:
                t = F.pad(t, (0, pad_w, 0, pad_h), mode="replicate")
            y = self._run(t.contiguous(memory_format=torch.channels_last))
            y = self._finish(y[:, 0, : h * s, : w * s].float(), numpy=False)
            if cuda:
                host = torch.empty(y.shape, dtype=torch.float32, pin_memory=True)
                host.copy_(y, non_blocking=True)
                torch.cuda.current_stream().synchronize()
                return host.numpy()
            return y.contiguous().numpy()

    @staticmethod
    def _finish(y: torch.Tensor, numpy: bool = True):
        """Refuse NaN/inf (before clamping, which would hide an inf), then clamp to [0, 1]."""
        if not torch.isfinite(y).all():
            raise MRSuperResError("the model produced NaN or infinite values (broken weights, or "
                                  "overflow: try --precision fp32)")
        y = y.float().clamp_(0, 1)
        return y.contiguous().numpy() if numpy else y

    def forward_tiled(self, x: np.ndarray, tile: int, overlap: int = TILE_OVERLAP,
                      context: int = TILE_CONTEXT) -> np.ndarray:
        """Like `forward`, in tiles of tile x tile LR pixels: each tile runs with `context`
        extra pixels of the slice around it (the network sees far: without them tile borders
        differ by 20-30 dB), keeps its own part, and neighbours are blended with linear ramps
        over `overlap` pixels, so there are no seams."""
        b, h, w = x.shape
        if tile >= h and tile >= w:
            return self.forward(x)
        s = self.scale
        overlap = min(overlap, tile // 2)
        out = np.zeros((b, h * s, w * s), dtype=np.float32)
        weight = np.zeros((h * s, w * s), dtype=np.float32)
        ys, xs = tile_starts(h, tile, overlap, 1), tile_starts(w, tile, overlap, 1)
        for y0 in ys:
            th = min(tile, h - y0)
            wy = _ramp(th * s, overlap * s, y0 == ys[0], y0 == ys[-1])
            cy0, cy1 = max(0, y0 - context), min(h, y0 + th + context)
            for x0 in xs:
                tw = min(tile, w - x0)
                wx = _ramp(tw * s, overlap * s, x0 == xs[0], x0 == xs[-1])
                cx0, cx1 = max(0, x0 - context), min(w, x0 + tw + context)
                run = self.forward(x[:, cy0:cy1, cx0:cx1])
                core = run[:, (y0 - cy0) * s:(y0 - cy0 + th) * s, (x0 - cx0) * s:(x0 - cx0 + tw) * s]
                wt = wy[:, None] * wx[None, :]
                out[:, y0 * s:(y0 + th) * s, x0 * s:(x0 + tw) * s] += core * wt
                weight[y0 * s:(y0 + th) * s, x0 * s:(x0 + tw) * s] += wt
        out /= weight
        return out


def constant_slices(stack: np.ndarray) -> dict[float, np.ndarray]:
    """{value: indices} of the slices whose voxels all hold one value (blank air slices)."""
    flat = stack.reshape(stack.shape[0], -1)
    lo, hi = flat.min(1), flat.max(1)
    groups: dict[float, list[int]] = {}
    for i in np.flatnonzero(lo == hi):
        groups.setdefault(float(lo[i]), []).append(int(i))
    return {v: np.array(ix) for v, ix in groups.items() if len(ix) > 1}


def check_slice_size(h: int, w: int) -> None:
    """Slices the network can run on (the plan checks before anything starts, inference again)."""
    if min(h, w) < MIN_SLICE:
        raise MRSuperResError(f"slices of {h}x{w} voxels are smaller than the {MIN_SLICE}x{MIN_SLICE} "
                              "the network needs (is another --axis the slice axis?)")


def super_resolve_slices(model: RRDBNet | SliceEngine, stack: np.ndarray, *, device: str | torch.device = "auto",
                         batch_size: int | None = None, precision: str = "auto", tile: int | None = None,
                         compile: bool = False, progress: ProgressCallback | None = None, cancel=None,
                         out: np.ndarray | None = None, notify: Callable[[str], None] | None = None,
                         self_ensemble: bool = False, consistency: str = consistency_step.DEFAULT,
                         engine: str = "auto", spread: np.ndarray | None = None,
                         residual: np.ndarray | None = None) -> np.ndarray:
    """(N, h, w) float32 in [0, 1] -> (N, h s, w s) float32 clipped to [0, 1].

    `tile` (LR pixels) cuts each slice into overlapping tiles; by default slices larger than
    the per-pass budget are tiled. `cancel` is a threading.Event or a callable returning True
    to stop (raises Cancelled); `progress(done, total)` is called after every batch. `out`, if
    given, receives the result (so callers can stream into their own buffer). `self_ensemble`
    averages the outputs for the 8 flips and rotations of each slice (8x the time); `spread`, if
    given with it, receives their voxel-wise standard deviation (the uncertainty map).
    `consistency` holds each output to its input (`consistency.apply`: anchor, exact or none; auto:
    the model card's, `consistency.for_model`);
    `residual`, an (N, h, w) array, receives the network's own departure from the input before that
    step (`consistency.residual`: the consistency map, what the step corrects).
    """
    engine = model if isinstance(model, SliceEngine) else SliceEngine(
        model, device=device, precision=precision, compile=compile, notify=notify, engine=engine)
    consistency = consistency_step.for_model(consistency, engine.model)
    if self_ensemble:
        return _self_ensemble(engine, stack, out, progress, spread, residual,
                              dict(batch_size=batch_size, tile=tile, cancel=cancel, consistency=consistency))
    if spread is not None:
        raise MRSuperResError("the uncertainty map is the spread of the 8 self-ensemble passes: it needs self_ensemble")
    if batch_size is not None and batch_size < 1:
        raise MRSuperResError(f"batch size must be at least 1, not {batch_size}")
    if tile is not None and tile < MIN_SLICE:
        raise MRSuperResError(f"tile size must be at least {MIN_SLICE} LR pixels, not {tile}")
    n, h, w = stack.shape
    s = engine.scale
    check_slice_size(h, w)
    if out is None:
        out = np.empty((n, h * s, w * s), dtype=np.float32)
    if tile is None and h * w > LR_PIXELS_PER_BATCH:
        tile = int(np.sqrt(LR_PIXELS_PER_BATCH)) - 2 * TILE_CONTEXT
    tile_px = min(tile + 2 * TILE_CONTEXT, h) * min(tile + 2 * TILE_CONTEXT, w) if tile else h * w
    budget = min(LR_PIXELS_PER_BATCH, engine.choice.batch_pixels or LR_PIXELS_PER_BATCH)   # measured, in memory
    batch = batch_size or max(1, budget // tile_px)
    first_choice = (batch, tile)

    # constant slices: one representative each, copied afterwards (exact)
    copies = constant_slices(stack)
    skip = np.zeros(n, dtype=bool)
    for ix in copies.values():
        skip[ix[1:]] = True
    todo = np.flatnonzero(~skip)

    done = 0
    if progress:
        progress(0, n)
    while done < len(todo):
        if _is_cancelled(cancel):
            raise Cancelled()
        chunk = todo[done:done + batch]
        try:
            x = stack[chunk] if len(chunk) > 1 else stack[chunk[0]][None]
            y = engine.forward_tiled(x, tile) if tile else engine.forward(x)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _is_out_of_memory(exc):
                raise
            if engine.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(chunk) > 1:                       # 1. halve the batch
                batch = max(1, len(chunk) // 2)
            elif (tile or max(h, w)) > MIN_TILE:     # 2. halve the tile
                tile = max(MIN_TILE, (tile or max(h, w)) // 2)
            elif engine.device.type == "cuda":       # 3. leave the GPU
                engine.fall_back_to_cpu(f"out of memory even for one {MIN_TILE}x{MIN_TILE} tile")
                batch, tile = first_choice               # the CPU has its own, larger memory
            else:
                raise MRSuperResError(f"out of memory on the CPU even for one {MIN_TILE}x{MIN_TILE} tile "
                                      "of a slice: free memory or close other programs") from None
            continue
        if residual is not None:
            residual[chunk] = consistency_step.residual(y, x)
        out[chunk] = consistency_step.apply(y, x, consistency)
        done += len(chunk)
        if progress:
            progress(int(done + skip[: chunk[-1] + 1].sum()), n)
    for ix in copies.values():
        out[ix[1:]] = out[ix[0]]
        if residual is not None:
            residual[ix[1:]] = residual[ix[0]]
    if progress:
        progress(n, n)
    return out


# the 8 symmetries of the square: k quarter turns, then a left-right flip or not
SYMMETRIES = [(k, flip) for k in range(4) for flip in (False, True)]


def _self_ensemble(engine: SliceEngine, stack: np.ndarray, out: np.ndarray | None,
                   progress: ProgressCallback | None, spread: np.ndarray | None, residual: np.ndarray | None,
                   options: dict) -> np.ndarray:
    """Geometric self-ensemble (EDSR's "+"): super-resolve each of the 8 flips/rotations of the
    slices, map every result back and average. The network is not exactly equivariant, so its
    errors partly cancel: the fidelity model gains PSNR at 8x the time. Where the 8 disagree the
    output depends on how the slice happened to be oriented: their standard deviation goes to
    `spread` (Welford's running update, exact in float32 for an equivariant network: zero)."""
    n, h, w = stack.shape
    s = engine.scale
    if out is None:
        out = np.zeros((n, h * s, w * s), dtype=np.float32)
    else:
        out[...] = 0
    if spread is not None:
        spread[...] = 0                       # holds the sum of squared deviations until the end
    if residual is not None:
        residual[...] = 0
    for i, (k, flip) in enumerate(SYMMETRIES):
        x = np.rot90(stack, k, axes=(1, 2))
        x = np.ascontiguousarray(x[:, :, ::-1] if flip else x)
        step = None if progress is None else (
            lambda done, total, i=i: progress((i * total + done) // len(SYMMETRIES), total))
        one = None if residual is None else np.empty(x.shape, np.float32)
        y = super_resolve_slices(engine, x, progress=step, residual=one, **options)
        y = np.rot90(y[:, :, ::-1] if flip else y, -k, axes=(1, 2))
        if residual is not None:
            residual += np.rot90(one[:, :, ::-1] if flip else one, -k, axes=(1, 2)) * np.float32(1 / len(SYMMETRIES))
        # Welford, in place on this pass's own buffer: y becomes delta / k, the mean moves by it,
        # and the sum of squared deviations grows by delta^2 (k - 1) / k = (delta / k)^2 k (k - 1)
        k = i + 1
        y -= out
        y *= np.float32(1 / k)
        out += y
        if spread is not None:
            np.square(y, out=y)
            y *= np.float32(k * (k - 1))
            spread += y
        del y
    if spread is not None:
        spread *= np.float32(1 / len(SYMMETRIES))
        np.sqrt(spread, out=spread)
    return out


def enhance_volume(volume: Volume, model: RRDBNet, *, axis: str | int = "auto", direction: str = "in-plane",
                   spacing: float | None = None, device: str = "auto", batch_size: int | None = None,
                   precision: str = "auto", tile: int | None = None, compile: bool = False,
                   progress: ProgressCallback | None = None, cancel=None,
                   notify: Callable[[str], None] | None = None,
                   self_ensemble: bool = False, consistency: str = consistency_step.DEFAULT, maps: bool = False,
                   engine: str = "auto", runner: SliceEngine | None = None, plan=None) -> tuple[Volume, dict]:
    """Super-resolve a volume; returns (HR volume in input units, run facts).

    `direction`: in-plane (each slice `model.scale` times finer), through-plane (the slice axis
    brought to `spacing` mm by an x1 model, see through_plane) or auto (through-plane for thick
    slices). `self_ensemble`: average over the 8 flips/rotations of each slice (8x the time).
    `consistency`: how the output is held to the input (anchor, exact, none; in-plane only, see
    the consistency module). Every in-plane run measures how far the network's output and the
    final output, re-acquired, are from the input (facts["data_consistency"]). `maps`: also
    return, as `hr.maps`, the consistency map (the network's output re-acquired minus the input:
    where it departs from the scan, and what the consistency step corrected; input units, on
    the output grid), the uncertainty map (standard deviation over the 8 self-ensemble passes,
    which `maps` runs: 8x the time; the output is then their mean) and, for a GAN model with
    its fidelity partner installed, the detail map (output_maps.detail_spread; 2 more passes).
    `runner`: a SliceEngine already made for `model`; `plan`: the through_plane.Plan already
    shown.

    Memory: the input as float32 plus the float32 output, nothing in float64; slices stream
    through the network in batches and their results land in the output in place (with
    `self_ensemble`, plus one output-sized buffer for the pass under way; with `maps`, up to
    three more: the spread, the consistency map, and the detail map's two passes in turn).
    """
    from .catalog import detail_ends
    from .output_maps import detail_spread, map_volume

    consistency_step.check_mode(consistency)
    if direction != "in-plane":
        from .through_plane import choose_direction, enhance_through_plane

        direction, axis, _ = choose_direction(volume, direction, axis)
        if direction == "through-plane":
            if self_ensemble:
                raise MRSuperResError("--self-ensemble applies to in-plane super-resolution only")
            if maps:
                raise MRSuperResError("--maps applies to in-plane super-resolution only (across thick slices the "
                                      "acquisition is the slice profile, not a box)")
            return enhance_through_plane(volume, model, axis=axis, spacing=spacing, device=device,
                                         batch_size=batch_size, precision=precision, tile=tile, progress=progress,
                                         cancel=cancel, notify=notify, engine=engine, plan=plan, runner=runner)
    if spacing is not None:
        raise MRSuperResError("--spacing applies to through-plane super-resolution (in-plane uses the model's scale)")
    if model.scale == 1:
        raise MRSuperResError("an x1 model is a through-plane model: use --direction through-plane (or auto)")
    consistency = consistency_step.for_model(consistency, model)
    data = check_voxels(volume.data, volume.meta.get("path", "volume"))
    ax = geometry.choose_axis(axis, volume.affine, data.shape)
    lo, hi = intensity_range(data)
    engine_name = engine
    engine = runner or SliceEngine(model, device=device, precision=precision, compile=compile, notify=notify,
                                   engine=engine_name)
    stack = geometry.slices_first(data, ax)
    t0 = time.perf_counter()
    normalised = normalise(stack, (lo, hi))
    s = model.scale
    spread = np.empty((stack.shape[0], stack.shape[1] * s, stack.shape[2] * s), np.float32) if maps else None
    lr_residual = np.empty(stack.shape, np.float32)
    ends = detail_ends(model) if maps else None
    gan = ends is not None
    passes = (8 if self_ensemble or maps else 1) + (2 if gan else 0)
    sr = super_resolve_slices(engine, normalised, batch_size=batch_size, tile=tile,
                              progress=_passes(progress, 0, passes - 2 * gan, passes),
                              cancel=cancel, self_ensemble=self_ensemble or maps, consistency=consistency,
                              spread=spread, residual=lr_residual)
    detail = detail_spread(ends, normalised, consistency=consistency, device=str(engine.device),
                           precision=engine.precision, engine=engine.engine, batch_size=batch_size, tile=tile,
                           cancel=cancel, progress=_passes(progress, passes - 2, 2, passes)) if gan else None
    signal = normalised > consistency_step.SIGNAL
    facts_consistency = {"network": consistency_step.summarise(lr_residual, signal),
                         "output": consistency_step.summarise(consistency_step.residual(sr, normalised), signal)}
    del normalised, signal
    denormalise(sr, lo, hi, in_place=True)
    hr = volume.regridded(geometry.slices_back(sr, ax), ax, s)
    facts = dict(direction="in-plane", axis=ax, axis_name=geometry.AXIS_NAMES[ax], scale=s,
                 input_shape=list(data.shape), output_shape=list(hr.data.shape),
                 intensity_range=[lo, hi], seconds=time.perf_counter() - t0, slices=stack.shape[0],
                 device=str(engine.device), precision=engine.precision, engine=engine.engine,
                 precision_why=engine.choice.why,
                 threads=torch.get_num_threads(),
                 self_ensemble=self_ensemble or maps, consistency=consistency,
                 data_consistency=facts_consistency, model=model_provenance(model))
    if maps:
        facts["uncertainty"] = consistency_step.summarise_spread(spread)
        if detail is not None:
            facts["detail_spread"] = consistency_step.summarise_spread(detail)
        lr_residual *= np.float32(hi - lo)
        spread *= np.float32(hi - lo)
        hr.maps = {"consistency": map_volume(consistency_step.on_output_grid(lr_residual, s), hr, ax,
                                              "network output re-acquired (box) minus input, input units"),
                   "uncertainty": map_volume(spread, hr, ax, "std over the 8 self-ensemble passes, input units")}
        if detail is not None:
            detail *= np.float32(hi - lo)
            hr.maps["detail"] = map_volume(detail, hr, ax, "|GAN - fidelity| / 2 (detail 1 vs 0), input units")
    hr.meta["description"] = describe_output(facts)
    return hr, facts


def _passes(progress, start: int, count: int, total: int):
    """progress(done, n) of one part of a run that makes `total` passes over the slices in all."""
    if progress is None:
        return None
    return lambda done, n: progress((start * n + done * count) // total, n)


def describe_output(facts: dict) -> str:
    """The line an output file carries (NIfTI descrip, NRRD content): what made it."""
    model = facts["model"]
    sha = f" sha256:{model['sha256'][:12]}" if model.get("sha256") else ""
    how = f"through-plane x{facts['factor']:.3g}" if facts.get("direction") == "through-plane" else f"x{facts['scale']}"
    mode = facts.get("consistency", "none")
    return (f"MRSuperRes {model['name']} {how}{sha}"
            f"{'' if mode == consistency_step.FALLBACK or facts.get('direction') == 'through-plane' else ' ' + mode}")
