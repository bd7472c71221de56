"""How a network runs on a device (precision, engine, batch), decided once by calibration and
handed to the SliceEngine, which never chooses."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Choice:
    """How a network runs here, and why: shown in verbose output, recorded in run facts."""
    precision: str
    why: str
    measured: dict = field(default_factory=dict)   # path -> {"seconds_per_slice", "psnr_vs_fp32"}
    cached: bool = False
    engine: str = "torch"                          # or "openvino" (engine.openvino)
    batch_pixels: int | None = None                # LR pixels per forward pass measured best (None: by memory)

    def as_facts(self) -> dict:
        return asdict(self)


def label_of(engine: str, precision: str) -> str:
    """("openvino", "bf16") -> "openvino-bf16"; ("torch", "fp32") -> "fp32": the inverse of split."""
    return precision if engine == "torch" else f"{engine}-{precision}"


def split(label: str) -> tuple[str, str]:
    """"openvino-bf16" -> ("openvino", "bf16"); "fp32" -> ("torch", "fp32")."""
    engine, _, precision = label.rpartition("-")
    return (engine or "torch"), precision
