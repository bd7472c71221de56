"""OpenVINO as an optional inference engine on the CPU (`pip install mrsuperres[openvino]`).

Why: on CPUs where torch's fp32 convolutions run well below the machine's peak, OpenVINO's
compiled RRDBNet runs faster with the same output (one 2-core Xeon: 1.43x torch's one-slice
loop; one 2-core AVX2 EPYC: 1.44x, 130 dB from torch). The network is converted once per model
(about 30 s for the 23-block one) and the IR kept in the cache folder, keyed by the weights'
sha256; a network built in code (no sha256) is converted in memory each time. `SliceEngine`
runs it through the same batching, tiling, out-of-memory back-off, cancelling, progress and
consistency step as the torch engine. Without the package nothing changes: `available()` is False and
`precision="auto"` never offers it.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from ..errors import MRSuperResError
from ..options import home_dir

HINTS = {"fp32": "f32", "bf16": "bf16"}


def available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def check_device(device) -> None:
    """OpenVINO runs here on the CPU only: anything else is refused in one line."""
    if device.type != "cpu":
        raise MRSuperResError("the OpenVINO engine runs on the CPU: use --device cpu, or --engine torch")


def allowed_engines() -> list[str]:
    """The engines `auto` may choose: torch, and OpenVINO where installed, unless MRSUPERRES_ENGINES
    (comma-separated) narrows them."""
    engines = ["torch"] + (["openvino"] if available() else [])
    wanted = os.environ.get("MRSUPERRES_ENGINES")
    if wanted:
        engines = [e for e in engines if e in {w.strip() for w in wanted.split(",")}] or ["torch"]
    return engines


def ir_path(model) -> Path | None:
    """Where the converted network of `model` is cached, or None when it has no weights file."""

    sha = (getattr(model, "card", None) or {}).get("sha256")
    if not sha:
        return None
    arch = "-".join(str(model.config[k]) for k in sorted(model.config))
    return home_dir() / "openvino" / f"{sha[:24]}-x{model.scale}-{arch}.xml"


def _convert(model, notify):
    import openvino as ov
    import torch

    if notify:
        notify("converting the network for OpenVINO (once per model)")
    example = torch.zeros(1, 1, 32, 32)
    with torch.no_grad():
        return ov.convert_model(model.float().eval(), example_input=example,
                                input=[ov.PartialShape([-1, 1, -1, -1])])


def load_network(model, notify=None):
    """The OpenVINO model of `model`: read from the cache, or converted and cached (written under
    a temporary name and renamed, .bin before .xml, so a half-written pair is never read)."""
    import openvino as ov

    core = ov.Core()
    path = ir_path(model)
    if path is not None and path.exists() and path.with_suffix(".bin").exists():
        try:
            return core.read_model(str(path))
        except Exception:                     # damaged cache: convert again
            pass
    network = _convert(model, notify)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.xml")
            ov.save_model(network, str(tmp), compress_to_fp16=False)
            os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
            os.replace(tmp, path)
        except OSError:                       # a cache that cannot be written costs a conversion next time
            pass
    return network


class OpenVINONetwork:
    """The network compiled for the CPU at one precision: (B, 1, H, W) float32 -> (B, 1, sH, sW)."""

    def __init__(self, model, precision: str = "fp32", threads: int | None = None, notify=None):
        import openvino as ov

        if precision not in HINTS:
            raise MRSuperResError(f"the OpenVINO engine runs fp32 or bf16, not {precision}")
        config = {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        core = ov.Core()
        path = ir_path(model)
        if path is not None and path.exists() and path.with_suffix(".bin").exists():
            # compiled from the file with a CACHE_DIR, OpenVINO keeps the compiled network too: start-up
            # drops by about 0.6 s (0.85 -> 0.25 s on a 2-core EPYC); a damaged file falls through
            core.set_property({"CACHE_DIR": str(path.parent / "compiled")})
            try:
                self.compiled = core.compile_model(str(path), "CPU", config)
                return
            except Exception:
                core = ov.Core()
        self.compiled = core.compile_model(load_network(model, notify), "CPU", config)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.compiled(np.ascontiguousarray(x, dtype=np.float32))[0])
