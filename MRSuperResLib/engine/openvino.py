"""OpenVINO as an optional inference engine on the CPU (`pip install mrsuperres[openvino]`).

Why: on CPUs where torch's fp32 convolutions run well below the machine's peak, OpenVINO's
compiled RRDBNet runs faster with the same output (one 2-core Xeon: 1.43x torch's one-slice
loop; one 2-core AVX2 EPYC: 1.44x, 130 dB from torch). The network is converted once per model
(about 30 s for the 23-block one) and the IR kept in the cache folder, keyed by the weights'
sha256, with the network compiled for each precision beside it; a network built in code (no
sha256) is converted in memory each time. Every cached file is checked against the sha256 its
manifest recorded (written last, atomically) before it is used: OpenVINO reads a damaged .bin or
compiled network without complaint and gave wrong images on every run, so a file that fails is
rebuilt, with one line. `SliceEngine` runs it through the same batching, tiling, out-of-memory
back-off, cancelling, progress and consistency step as the torch engine. Without the package
nothing changes: `available()` is False and `precision="auto"` never offers it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
from pathlib import Path

import numpy as np

from ..errors import MRSuperResError
from ..files import atomic_path, atomic_write_bytes, sha256_of
from ..options import home_dir

HINTS = {"fp32": "f32", "bf16": "bf16"}
MANIFEST_VERSION = 1


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


def _convert(model, notify, why: str | None = None):
    import openvino as ov
    import torch

    if notify:
        notify(why or "converting the network for OpenVINO (once per model)")
    example = torch.zeros(1, 1, 32, 32)
    with torch.no_grad():
        return ov.convert_model(model.float().eval(), example_input=example,
                                input=[ov.PartialShape([-1, 1, -1, -1])])


def compiled_path(path: Path, precision: str, threads: int | None) -> Path:
    """Where the network of the IR at `path`, compiled at `precision` for `threads`, is kept."""
    return path.parent / "compiled" / f"{path.stem}-{HINTS[precision]}-t{int(threads or 0)}.blob"


def read_manifest(path: Path) -> dict | None:
    """The manifest beside the IR `path` when it is there and well formed, else None."""
    try:
        manifest = json.loads(path.with_suffix(".json").read_text())
        if (manifest.get("version") == MANIFEST_VERSION and isinstance(manifest.get("model_sha256"), str)
                and isinstance(manifest.get("files"), dict) and isinstance(manifest.get("compiled"), dict)):
            return manifest
    except (OSError, ValueError, AttributeError):
        pass
    return None


def check_ir(path: Path, model) -> tuple[dict | None, str | None]:
    """(manifest, None) when the cached IR is `model`'s (its full sha256: the file name holds only a
    prefix) and matches what was recorded, else (None, what failed); (None, None) when nothing is
    cached yet."""
    name = path.with_suffix(".json").name
    if not path.with_suffix(".json").exists():
        cached = path.exists() or path.with_suffix(".bin").exists()
        return None, "no checksums recorded" if cached else None
    manifest = read_manifest(path)
    if manifest is None:
        return None, f"{name} is unreadable"
    if manifest["model_sha256"] != model.card["sha256"]:
        return None, f"{name} was made from other weights"
    for file in (path, path.with_suffix(".bin")):
        try:
            if sha256_of(file) != manifest["files"].get(file.name):
                return None, f"{file.name} differs from its recorded sha256"
        except OSError:
            return None, f"{file.name} is missing or unreadable"
    return manifest, None


def save_network(network, path: Path, model) -> None:
    """Cache the IR (.bin, then .xml, each renamed into place), then the manifest of their sha256s;
    a cache that cannot be written costs a conversion next time, never the run."""
    import openvino as ov

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, ".xml") as tmp:
            tmp_bin = tmp.with_suffix(".bin")
            try:
                ov.save_model(network, str(tmp), compress_to_fp16=False)
                files = {path.name: sha256_of(tmp), path.with_suffix(".bin").name: sha256_of(tmp_bin)}
                os.replace(tmp_bin, path.with_suffix(".bin"))
            finally:
                tmp_bin.unlink(missing_ok=True)
        write_manifest(path, {"version": MANIFEST_VERSION, "model_sha256": model.card["sha256"],
                              "files": files, "compiled": {}})
    except (OSError, RuntimeError):
        pass


def write_manifest(path: Path, manifest: dict) -> None:
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(manifest, indent=1).encode())


def load_network(model, notify=None, checked: tuple | None = None):
    """The OpenVINO model of `model`: read from the cache when it passes its check (`checked`: the
    result of check_ir, when already known), else converted and cached."""
    import openvino as ov

    path = ir_path(model)
    if path is None:
        return _convert(model, notify)
    manifest, problem = checked or check_ir(path, model)
    if manifest is not None:
        try:
            return ov.Core().read_model(str(path))
        except Exception as exc:              # files as recorded, yet unreadable here: convert again
            problem = f"OpenVINO cannot read it: {type(exc).__name__}"
    network = _convert(model, notify, problem and f"the OpenVINO cache {path.name} failed its check "
                                                  f"({problem}); converting the network again")
    save_network(network, path, model)
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
        checked = check_ir(path, model) if path is not None else (None, None)
        if checked[0] is not None:
            # the compiled network kept from an earlier run starts in about 0.25 s instead of 0.85 s
            # (2-core EPYC); OpenVINO runs a damaged one without complaint, so it is checked too
            blob = compiled_path(path, precision, threads)
            entry = checked[0]["compiled"].get(blob.name)
            if isinstance(entry, dict) and entry.get("openvino") == ov.__version__:
                problem = None
                try:
                    data = blob.read_bytes()
                    if hashlib.sha256(data).hexdigest() == entry.get("sha256"):
                        self.compiled = core.import_model(io.BytesIO(data), "CPU", config)
                        return
                    problem = "it differs from its recorded sha256"
                except OSError:
                    problem = "it is missing or unreadable"
                except Exception as exc:
                    problem = f"OpenVINO cannot import it: {type(exc).__name__}"
                if notify:
                    notify(f"the compiled OpenVINO cache {blob.name} failed its check ({problem}); compiling again")
        self.compiled = core.compile_model(load_network(model, notify, checked), "CPU", config)
        if path is not None:
            self._keep(path, compiled_path(path, precision, threads), model)

    def _keep(self, path: Path, blob: Path, model) -> None:
        """Write the compiled network beside the IR and record its sha256 in the manifest (re-read,
        so that another precision's entry is kept); failing costs a compilation next time."""
        import openvino as ov

        try:
            exported = self.compiled.export_model()
            data = exported.getvalue() if hasattr(exported, "getvalue") else bytes(exported)
            manifest = read_manifest(path)
            if manifest is None or manifest["model_sha256"] != model.card["sha256"]:
                return
            blob.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(blob, data)
            manifest["compiled"][blob.name] = {"sha256": hashlib.sha256(data).hexdigest(),
                                               "openvino": ov.__version__}
            write_manifest(path, manifest)
        except (OSError, RuntimeError):
            pass

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.compiled(np.ascontiguousarray(x, dtype=np.float32))[0])
