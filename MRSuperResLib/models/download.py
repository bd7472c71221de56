"""Downloading one file that must arrive whole and exact: resumed where a connection dropped
(HTTP Range), checked against its sha256 before anyone can use it, installed by a rename, and
fetched by one process at a time (a lock file beside it; a lock whose process is gone is taken
over). Every failure is one line; a file that fails its check is removed, never installed.
Standard library only (urllib), so the Slicer panel and a batch on a cluster node share it.
"""
from __future__ import annotations

import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from ..errors import Cancelled, MRSuperResError
from ..files import default_file_mode, process_alive, sha256_of

CHUNK = 1 << 20
TIMEOUT_SECONDS = 20.0           # no byte from the server for this long: give up on that URL
ATTEMPTS = 4                     # per URL: the first request and three resumes after a drop
LOCK_WAIT_SECONDS = 3600.0       # how long to wait for another process fetching the same file


def partial_path(target: Path, sha256: str) -> Path:
    """The download in progress, named after the exact file awaited (another version never resumes it)."""
    return target.with_name(f".{target.name}.{sha256[:12]}.download")


def lock_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.lock")


def download(urls: list[str], target: Path, sha256: str, size: int | None = None,
             progress: Callable[[int, int], None] | None = None, cancel: Callable[[], bool] | None = None,
             timeout: float = TIMEOUT_SECONDS, label: str | None = None) -> Path:
    """`target`, downloaded from the first of `urls` that serves it whole with this sha256.
    `progress(done, total)` in bytes; `cancel()` True stops it (Cancelled, nothing installed)."""
    target = Path(target)
    label = label or target.name
    target.parent.mkdir(parents=True, exist_ok=True)
    with _Lock(lock_path(target), cancel):
        if target.exists() and sha256_of(target) == sha256:      # another process finished it meanwhile
            return target
        partial = partial_path(target, sha256)
        problems = []
        for url in urls:
            try:
                _fetch(url, partial, size, progress, cancel, timeout)
            except Cancelled:
                partial.unlink(missing_ok=True)
                raise
            except _Failed as exc:
                problems.append(f"{url}: {exc}")
                continue
            got = sha256_of(partial)
            if got != sha256:
                partial.unlink(missing_ok=True)
                raise MRSuperResError(f"the download of {label} from {url} has sha256 {got[:12]}..., not the "
                                      f"registry's {sha256[:12]}...: refused, nothing was installed")
            with open(partial, "rb") as f:
                os.fsync(f.fileno())
            os.chmod(partial, default_file_mode())
            os.replace(partial, target)
            return target
        raise _unreachable(label, problems)


class _Failed(Exception):
    """This URL did not deliver (HTTP error, no answer, a refused connection): try the next."""


def _fetch(url: str, partial: Path, size: int | None, progress, cancel, timeout: float) -> None:
    """Append to `partial` from `url` until it is whole (`size`, else what the server announced),
    resuming after drops."""
    for attempt in range(ATTEMPTS):
        have = partial.stat().st_size if partial.exists() else 0
        if size is not None and have == size:
            return
        if size is not None and have > size:
            partial.unlink()
            have = 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if have and response.status != 206:          # the server ignored the range: start over
                    have = 0
                announced = response.headers.get("Content-Length")
                total = size or (have + int(announced) if announced else 0)
                size = size or total or None            # a drop is then told from the end
                with open(partial, "ab" if have else "wb") as out:
                    done = have
                    while True:
                        if cancel is not None and cancel():
                            raise Cancelled("the download was cancelled; nothing was installed")
                        chunk = response.read1(CHUNK)        # what has arrived: progress and cancel stay live
                        if not chunk:
                            break
                        out.write(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, size or total)
            if size is None or partial.stat().st_size >= size:
                return
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and size is not None and have >= size:     # already whole
                return
            raise _Failed(f"HTTP {exc.code} {exc.reason}") from None
        except (socket.timeout, TimeoutError) as exc:
            if attempt == ATTEMPTS - 1 or not partial.exists() or partial.stat().st_size == have:
                raise _Failed(f"no answer within {timeout:g} s") from exc
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            if attempt == ATTEMPTS - 1 or not partial.exists() or partial.stat().st_size == have:
                raise _Failed(str(reason)) from None
    raise _Failed("the connection kept dropping")


def _unreachable(label: str, problems: list[str]) -> MRSuperResError:
    tried = "; ".join(problems) or "no download address"
    return MRSuperResError(f"cannot download {label} ({tried}). Without network access: run `mrsuperres models "
                           f"pull` on a machine that has it and copy the file into the same folder here, or set "
                           f"MRSUPERRES_MODEL_MIRROR to a mirror, or convert a weights file you have with "
                           f"`mrsuperres import-weights`")


class _Lock:
    """One fetching process per file: a lock file holding its pid. Another process waits for it
    (a file that appears is then simply checked); a lock whose process is gone is taken over."""

    def __init__(self, path: Path, cancel=None):
        self.path, self.cancel = path, cancel

    def __enter__(self):
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                with os.fdopen(fd, "w") as f:
                    f.write(str(os.getpid()))
                return self
            except FileExistsError:
                pass
            if not self._owner_alive():
                self.path.unlink(missing_ok=True)                 # left by a process that was killed
                continue
            if self.cancel is not None and self.cancel():
                raise Cancelled("the download was cancelled; nothing was installed")
            if time.monotonic() > deadline:
                raise MRSuperResError(f"another process has been downloading into {self.path.parent} for over "
                                      f"{LOCK_WAIT_SECONDS / 60:.0f} minutes; remove {self.path} if it is gone")
            time.sleep(0.2)

    def _owner_alive(self) -> bool:
        try:
            text = self.path.read_text().strip()
            if not text:                   # created this instant, its pid not yet written
                return time.time() - self.path.stat().st_mtime < 5
            return process_alive(int(text))
        except FileNotFoundError:
            return False                   # released meanwhile: try again
        except (OSError, ValueError):
            return True

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)
        return False
