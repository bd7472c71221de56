"""What the panel says about the device, found out in a child process: whether torch sees a CUDA
GPU and how much memory it has. Slicer's own process never imports torch or initialises CUDA
for it (every computation runs in a child anyway)."""
from __future__ import annotations

import json
import subprocess

from .jobs import child_environment, popen_options, python_executable

SMALL_GPU_GIB = 6.0          # below this, say that large slices will be tiled
PROBE = ("import json, torch\n"
         "cuda = torch.cuda.is_available()\n"
         "gib = torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None\n"
         "print(json.dumps({'cuda': cuda, 'gpu_gib': gib, "
         "'gpu': torch.cuda.get_device_name(0) if cuda else None}))\n")


class DeviceProbe:
    """The child that finds out; `poll()` is None while it runs, then the note (text, maybe empty)."""

    def __init__(self, python: str | None = None):
        self.process = subprocess.Popen([python or python_executable(), "-c", PROBE], stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True, env=child_environment(),
                                        **popen_options())
        self.note: str | None = None

    def poll(self) -> str | None:
        if self.note is None and self.process.poll() is not None:
            out = self.process.stdout.read() if self.process.stdout else ""
            try:
                self.note = device_note(json.loads(out.strip().splitlines()[-1]))
            except (ValueError, IndexError):
                self.note = ""                     # torch missing or broken: the dependency line says so
        return self.note

    def wait(self, timeout: float = 120) -> str:
        self.process.wait(timeout)
        return self.poll()


def device_note(report: dict) -> str:
    """The line under the device choice, from the child's report."""
    if not report.get("cuda"):
        return "No CUDA GPU found: running on the CPU (bf16 where the CPU has it)."
    gib = report.get("gpu_gib") or 0.0
    if gib < SMALL_GPU_GIB:
        return f"The GPU has {gib:.1f} GiB: large slices will be tiled automatically."
    return ""
