"""A generator made ready for fast inference on one device at one resolved precision and engine.

Speed: channels_last, `torch.inference_mode`, the precision calibration chose, pinned memory and
asynchronous copies on CUDA, optional `torch.compile` (checked against the eager network once).
Memory: a slice too large for the budget is cut into overlapping tiles blended with linear ramps
(no seams). fp32 is the reference every fast path is tested against. Batching, the out-of-memory
back-off and the self-ensemble are in `batches`; choosing the precision is `calibration`'s.
"""
from __future__ import annotations

import sys
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import MRSuperResError
from ..models.rrdbnet import RRDBNet
from ..options import ENGINES
from .choice import Choice
from .devices import autocast, resolve_precision, select_device, use_all_cores
from .limits import ACCURACY_DB, TILE_CONTEXT, TILE_OVERLAP
from .openvino import check_device


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

    def __init__(self, model: RRDBNet, device: str | torch.device = "auto", precision: str = "fp32",
                 compile: bool = False, notify: Callable[[str], None] | None = None, engine: str = "torch",
                 choice: Choice | None = None, rechoose: Callable | None = None):
        """`precision` and `engine` as resolved (calibration.make_runner resolves "auto", measuring,
        and passes its `choice`): made directly, it runs exactly what it is told. `rechoose(model,
        device)` gives the Choice for the CPU after a CUDA out-of-memory (make_runner's measures
        again; without one, fp32 torch)."""
        if choice is None and ("auto" in (precision, engine)):
            raise MRSuperResError("a SliceEngine runs a resolved precision and engine: "
                                  "engine.calibration.make_runner chooses for 'auto'")
        if engine not in ENGINES or engine == "auto":
            raise MRSuperResError(f"unknown engine '{engine}' ({', '.join(ENGINES)})")
        self.device = device if isinstance(device, torch.device) else select_device(device)
        if (choice.engine if choice else engine) == "openvino":
            check_device(self.device)
        self.notify = notify or (lambda text: print(f"mrsuperres: {text}", file=sys.stderr))
        if self.device.type == "cpu":
            use_all_cores()
        self.scale = model.scale
        self.multiple = model.input_multiple
        self._model = model
        self._rechoose = rechoose
        self._place(compile)
        self._adopt(choice or Choice(resolve_precision(precision, self.device), "asked for", engine=engine))

    @property
    def network(self) -> RRDBNet:
        """The generator as given (its card and provenance), not the compiled wrapper."""
        return self._model

    def like(self, model: RRDBNet) -> SliceEngine:
        """A runner for another network on this device, run as this one is (same choice)."""
        return SliceEngine(model, device=self.device, notify=self.notify, choice=self.choice, rechoose=self._rechoose)

    def _adopt(self, choice) -> None:
        """Run at `choice`'s precision, through OpenVINO where it chose that engine."""
        self.choice, self.precision, self.engine = choice, choice.precision, choice.engine
        self._ov = None
        if self.engine == "openvino":
            from .openvino import OpenVINONetwork
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
        self.device = torch.device("cpu")
        use_all_cores()
        self._place(False)
        self._adopt(self._rechoose(self._model, self.device) if self._rechoose
                    else Choice("fp32", "the CPU fallback", engine="torch"))
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


def check_network(runner: SliceEngine) -> None:
    """One small pass, so that weights which give NaN are refused in one line before the plan is
    shown (a few milliseconds: 16 x 16 input pixels)."""
    runner.forward(np.full((1, 16, 16), 0.5, np.float32))
