"""Sizes checked before memory is taken: a header's voxel count against the file that must hold
them, and what a read or an output needs against the memory this machine has. A damaged or hostile
header then gets one line naming the file and the figures, instead of gigabytes allocated and a
"not enough memory" that blames the machine."""
from __future__ import annotations

from pathlib import Path

from ..errors import MRSuperResError

# the most a deflate (gzip, zlib) stream expands: 1032:1, so a .gz smaller than 1/1032 of what its
# header declares cannot hold it; a little slack for the gzip framing
DEFLATE_MAX_RATIO = 1032
MAX_OUTPUT_BYTES = 64 * 2**30     # the largest float32 output MRSuperRes makes (a 4096 x 4096 x 1024 volume)


def gigabytes(n: float) -> str:
    """A size as people say it: 3.4 GB, 120 MB, 512 KB."""
    return (f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB" if n >= 2**20
            else f"{n / 2**10:.0f} KB")


def voxel_count(shape) -> int:
    """Exact, in Python integers: a hostile header's sizes overflow numpy's int64 product."""
    count = 1
    for n in shape:
        count *= int(n)
    return count


def shape_text(shape) -> str:
    return " x ".join(str(int(n)) for n in shape)


def check_declared_size(path: Path, shape, itemsize: int, offset: int = 0, encoding: str = "raw",
                        data_file: Path | None = None) -> None:
    """Refuse a header whose voxels the file cannot hold: raw data must fill the file (from
    `offset`), deflated data cannot expand more than DEFLATE_MAX_RATIO times. Other encodings
    (bzip2, text) are left to the reader."""
    data_file = data_file or path
    voxels = voxel_count(shape)
    declared = voxels * int(itemsize)
    try:
        length = data_file.stat().st_size
    except OSError as exc:
        raise MRSuperResError(f"cannot read {data_file}: {exc.strerror or exc}") from None
    if encoding == "raw":
        room = length - offset
    elif encoding == "gzip":
        room = (length - offset) * DEFLATE_MAX_RATIO + 1024
    else:
        return
    if declared > room:
        where = "" if data_file == path else f" (its data file {data_file.name})"
        raise MRSuperResError(f"{path}: its header declares {shape_text(shape)} voxels ({gigabytes(declared)}), "
                              f"but the file{where} holds {length:,} bytes: damaged, truncated or not what it says")


def available_memory() -> int | None:
    """Bytes this process can still take without swapping: the kernel's MemAvailable, lowered to
    a cgroup's limit (a container, a SLURM job) when one is set; None where neither is known."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            cap, used = Path(limit).read_text().strip(), Path(usage).read_text().strip()
            if cap.isdigit() and int(cap) < 2**60:
                found.append(max(0, int(cap) - int(used)))
        except (OSError, ValueError):
            continue
    return min(found) if found else None


def check_memory(what: str, needed: int, hint: str = "") -> None:
    """Refuse work that needs more memory than the machine has available, before taking it."""
    free = available_memory()
    if free is not None and needed > free:
        raise MRSuperResError(f"{what} needs {gigabytes(needed)} of memory, {gigabytes(free)} is available"
                              f"{hint}")


def check_before_reading(path: Path, shape, itemsize: int, offset: int = 0, encoding: str = "raw",
                         data_file: Path | None = None) -> None:
    """What a reader checks before it reads the voxels: the file can hold what its header
    declares, and the machine has the memory for them and their float32 copy."""
    check_declared_size(path, shape, itemsize, offset, encoding, data_file)
    voxels = voxel_count(shape)
    check_memory(f"reading {path} ({shape_text(shape)} voxels)", voxels * (4 + int(itemsize)))


def check_output_size(shape, why: str = "") -> None:
    """An output's float32 size against MAX_OUTPUT_BYTES and the memory available (the whole
    output is held in memory before it is written)."""
    voxels = voxel_count(shape)
    needed = 4 * voxels
    what = f"the output of {shape_text(shape)} voxels"
    if needed > MAX_OUTPUT_BYTES:
        raise MRSuperResError(f"{what} would be {gigabytes(needed)}, over MRSuperRes's limit of "
                              f"{gigabytes(MAX_OUTPUT_BYTES)}{why}")
    check_memory(what, needed, why)
