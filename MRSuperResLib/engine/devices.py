"""Where and at what precision the network runs: device and precision choice, autocast, CPU
threads, and the device's name for run records. One home, shared by inference, evaluation,
benchmarking and training, so that `--device` and `--precision` mean the same everywhere.
"""
from __future__ import annotations

import contextlib
import os
import platform

import torch

from ..errors import MRSuperResError
from ..options import PRECISIONS



def select_device(device: str = "auto") -> torch.device:
    """`auto` = CUDA when present, else CPU; asking for CUDA without a GPU is an error."""
    device = (device or "auto").lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device in ("gpu", "cuda") or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise MRSuperResError("--device cuda was asked for, but PyTorch sees no CUDA GPU here "
                                  "(use --device cpu or auto)")
        return torch.device("cuda" if device == "gpu" else device)
    if device == "cpu":
        return torch.device("cpu")
    raise MRSuperResError(f"unknown device '{device}' (auto, cpu or cuda)")


def cpu_has_fast_bf16() -> bool:
    """AVX-512 bf16 or AMX: bf16 convolutions run at least twice as fast as fp32 there."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """Check an explicit precision against the device. `auto` here is only a guess from flags (bf16 on
    CUDA GPUs that have it, else fp16; bf16 on CPUs with bf16 units, else fp32): where a network is
    at hand, `calibration.choose` measures instead, since flags mislead on some CPUs."""
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise MRSuperResError(f"unknown precision '{precision}' ({', '.join(PRECISIONS)})")
    if precision == "fp16" and device.type == "cpu":
        raise MRSuperResError("fp16 runs on CUDA GPUs; on the CPU use bf16 (fast where the CPU has it) or fp32")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def autocast(device: torch.device, precision: str):
    """The autocast context for a resolved `precision` (fp32: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        raise MRSuperResError(f"unknown precision '{precision}' (fp32, bf16 or fp16)")
    if precision == "fp16" and device.type == "cpu":
        raise MRSuperResError("fp16 runs on CUDA GPUs; on the CPU use bf16 (fast where the CPU has it) or fp32")
    return torch.autocast(device.type, dtype=dtype)


def usable_cores() -> int:
    """The CPUs this process may run on (cgroup/affinity aware), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def use_all_cores() -> int:
    """One intra-op thread per CPU this process may run on (cgroup/affinity aware), so that a
    container limited to 2 CPUs of a 64-core host does not run 64 threads on them; an explicit
    OMP_NUM_THREADS wins."""
    if "OMP_NUM_THREADS" not in os.environ:
        usable = usable_cores()
        if torch.get_num_threads() != usable:
            torch.set_num_threads(usable)
    return torch.get_num_threads()


def device_name(device: torch.device) -> str:
    """A readable name of the device for run records: the GPU's model, or the CPU and threads."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
