"""Safe file writing and hashing: outputs appear complete or not at all.

A file is written under a hidden `.NAME.PID.*.partial` name beside it and renamed when complete.
An error or SIGTERM (the CLI turns it into an exception) removes the partial file at once; one
left by a process that was killed (SIGKILL, a power cut) is removed by the next write of the same
file, once its process is gone.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

NAME_ROOM = 200                  # of a file name's 255 characters, what the partial name keeps of it
STALE_SECONDS = 3600             # a partial file of the old form (no process id) is left this long


def default_file_mode() -> int:
    """rw for everyone the umask allows (mkstemp alone would leave files private)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A hidden `.NAME.*.partial<suffix>` path beside `path` to write to; when the block ends
    it is fsynced and renamed onto `path`, and on any error it is removed."""
    path = Path(path)
    sweep_partials(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{partial_prefix(path)}{os.getpid()}.", suffix=f".partial{suffix}",
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def process_alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, killed but not yet reaped, counts as gone): the test
    of whether files a process left (partial files, job folders) are still its own."""
    if sys.platform == "win32":
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x00100000, False, pid)          # SYNCHRONIZE
        if not handle:
            return False
        try:
            return kernel32.WaitForSingleObject(handle, 0) == 0x102    # WAIT_TIMEOUT: not signalled, running
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:                            # Linux: 'Z' after a kill, until reaped
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def partial_prefix(path: Path) -> str:
    """The start of `path`'s partial names: short enough that a 255-character name still fits."""
    return f".{path.name[:NAME_ROOM]}."


def sweep_partials(path: Path) -> list[Path]:
    """Remove the partial files of `path` whose writer is gone (killed before it could clean up);
    those of a living process (another run writing the same file) stay."""
    removed = []
    prefix = partial_prefix(path)
    try:
        found = list(path.parent.glob(glob.escape(prefix) + "*.partial*"))
    except OSError:
        return removed
    for partial in found:
        owner = partial.name[len(prefix):].split(".", 1)[0]
        try:
            gone = (not process_alive(int(owner)) if owner.isdigit() and int(owner) != os.getpid()
                    else not owner.isdigit() and time.time() - partial.stat().st_mtime > STALE_SECONDS)
            if gone:
                partial.unlink()
                removed.append(partial)
        except (OSError, ValueError):
            continue
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call `write(file)` on a temporary file beside `path`, then rename it (see atomic_path)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def safe_name(name: str) -> str:
    """A file and model name from a node's name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "volume"
