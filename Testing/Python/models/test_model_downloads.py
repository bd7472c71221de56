"""Models the registry lists are downloaded on first use from a real HTTP server on the loopback
address (this test's, with Range support): progress, a resume after the server drops the
connection, a wrong sha256, a 404, a server that never answers, two processes at once, a cancel
from the Slicer logic, a mirror, and a tampered copy that is downloaded again. Nothing leaves the
machine."""
from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import ROOT, SAMPLE, tiny_model

from MRSuperResLib.cli import main
from MRSuperResLib.errors import MRSuperResError
from MRSuperResLib.files import sha256_of
from MRSuperResLib.models import catalog, registry
from MRSuperResLib.models.weights import save_model


def small_lr(path):
    """A real low-resolution volume: every 4th voxel of the bundled sample in-plane, 3 slices."""
    img = nib.load(str(SAMPLE))
    data = np.asarray(img.dataobj, dtype=np.float32)[::4, ::4, 20:23]
    nib.save(nib.Nifti1Image(data, img.affine @ np.diag([4, 4, 1, 1])), str(path))
    return path


class Server(http.server.ThreadingHTTPServer):
    """Serves `root`; /drop/ sends half of a file then hangs up (once per file), /slow/ sends 8 KB
    every 50 ms, /silent/ accepts and never answers, anything missing is a 404."""
    daemon_threads = True

    def __init__(self, root: Path):
        self.root, self.requests, self.dropped = root, [], set()
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def handle_error(self, request, client_address):
        pass                                   # a client that hung up (a cancel, a timeout) is expected

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{path}"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        mode, _, name = self.path.strip("/").partition("/")
        self.server.requests.append((mode, name, self.headers.get("Range")))
        if mode == "silent":
            time.sleep(30)
            return
        path = self.server.root / name
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        body = data[start:]
        if mode == "drop" and name not in self.server.dropped:
            self.server.dropped.add(name)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        step = 1 << 13 if mode == "slow" else len(body)
        for i in range(0, len(body), step):
            self.wfile.write(body[i:i + step])
            if mode == "slow":
                time.sleep(0.05)


@pytest.fixture
def remote(tmp_path, monkeypatch):
    """A tiny model served by a loopback server and a registry naming it; MRSUPERRES_HOME empty."""
    served = tmp_path / "served"
    served.mkdir()
    weights = served / "tiny-remote.safetensors"
    save_model(tiny_model(4), weights, {"name": "tiny-remote", "description": "a test model"})
    server = Server(served)

    def make_registry(mode="rel", sha=None, urls=None):
        entry = {"name": "tiny-remote", "version": "1", "task": "in-plane x4", "scale": 4,
                 "file": weights.name, "sha256": sha or sha256_of(weights), "size": weights.stat().st_size,
                 "licence": "BSD-3-Clause", "card": "tiny-remote.json",
                 "card_sha256": sha256_of(served / "tiny-remote.json"),
                 "urls": urls or [server.url(f"{mode}/{weights.name}")]}
        path = tmp_path / "registry" / "registry.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"schema_version": 1, "release": "test", "models": [entry]}))
        monkeypatch.setenv(registry.REGISTRY_ENV, str(path))
        return path
    monkeypatch.setenv("MRSUPERRES_HOME", str(tmp_path / "home"))
    yield server, weights, make_registry
    server.shutdown()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.exists() else []


def test_a_registry_model_is_downloaded_with_progress_and_checked(remote):
    server, weights, make_registry = remote
    make_registry()
    seen = []
    path = catalog.resolve_model("tiny-remote", progress=lambda done, total: seen.append((done, total)))
    assert path == catalog.cache_dir() / weights.name and sha256_of(path) == sha256_of(weights)
    assert (catalog.cache_dir() / "tiny-remote.json").exists() and seen[-1] == (weights.stat().st_size,) * 2
    assert leftovers(catalog.cache_dir()) == []
    assert catalog.resolve_model("tiny-remote") == path and len(server.requests) == 2   # card + weights, once


def test_a_dropped_connection_is_resumed_with_a_range_request(remote):
    server, weights, make_registry = remote
    make_registry("drop")
    path = catalog.resolve_model("tiny-remote", progress=lambda *a: None)
    assert sha256_of(path) == sha256_of(weights)
    ranges = [r for mode, name, r in server.requests if name == weights.name]
    assert ranges[0] is None and ranges[1] == f"bytes={weights.stat().st_size // 2}-"


def test_a_wrong_sha256_is_refused_and_nothing_is_installed(remote):
    server, weights, make_registry = remote
    make_registry(sha="0" * 64)
    with pytest.raises(MRSuperResError, match="has sha256 .*not the registry's 000000000000...: refused"):
        catalog.resolve_model("tiny-remote", progress=lambda *a: None)
    assert not (catalog.cache_dir() / weights.name).exists() and leftovers(catalog.cache_dir()) == []


def test_a_404_and_a_server_that_never_answers_are_one_clear_line(remote):
    server, weights, make_registry = remote
    make_registry(urls=[server.url("rel/missing/tiny-remote.safetensors")])
    with pytest.raises(MRSuperResError, match=r"HTTP 404.*Without network access: run `mrsuperres models pull`"):
        catalog.resolve_model("tiny-remote", progress=lambda *a: None)
    path = make_registry("silent")
    t0 = time.monotonic()
    with pytest.raises(MRSuperResError, match="no answer within 1 s"):
        registry.fetch("tiny-remote", catalog.cache_dir(), registry=path, timeout=1.0)
    assert time.monotonic() - t0 < 10
    assert not (catalog.cache_dir() / weights.name).exists() and leftovers(catalog.cache_dir()) == []


def test_two_processes_pulling_at_once_make_one_file(remote, tmp_path):
    server, weights, make_registry = remote
    make_registry("slow")
    pull = [sys.executable, "-m", "MRSuperResLib", "models", "pull", "tiny-remote"]
    runs = [subprocess.Popen(pull, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outs = [r.communicate(timeout=120) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outs
    assert sha256_of(catalog.cache_dir() / weights.name) == sha256_of(weights)
    assert leftovers(catalog.cache_dir()) == []
    assert sum(name == weights.name for _, name, _ in server.requests) == 1      # downloaded once


def test_enhance_fetches_a_registry_model_from_a_mirror_and_runs(remote, tmp_path, monkeypatch):
    server, weights, make_registry = remote
    make_registry(urls=["http://127.0.0.1:9/nowhere/tiny-remote.safetensors"])      # the release is unreachable
    monkeypatch.setenv(registry.MIRROR_ENV, server.url("rel"))
    out = tmp_path / "sr.nii.gz"
    assert main(["enhance", str(small_lr(tmp_path / "lr.nii.gz")), "-o", str(out), "--model", "tiny-remote",
                 "--precision", "fp32"]) == 0
    assert out.exists() and sha256_of(catalog.cache_dir() / weights.name) == sha256_of(weights)


def test_a_tampered_download_is_never_used(remote, capsys):
    server, weights, make_registry = remote
    make_registry()
    path = catalog.resolve_model("tiny-remote", progress=lambda *a: None)
    data = bytearray(path.read_bytes())
    data[-100:] = bytes(100)
    path.write_bytes(bytes(data))
    capsys.readouterr()
    assert catalog.resolve_model("tiny-remote", progress=lambda *a: None) == path
    assert sha256_of(path) == sha256_of(weights)
    assert "differs from the registry's" in capsys.readouterr().err


def test_the_slicer_logic_lists_a_model_not_downloaded_and_a_cancel_stops_its_download(remote, tmp_path):
    server, weights, make_registry = remote
    make_registry("slow")
    from MRSuperResLib.in_slicer.logic import MRSuperResLogic
    from MRSuperResLib.in_slicer.scene import headless_scene, load_volume

    headless_scene()
    logic = MRSuperResLogic()
    listed = {m["name"]: m for m in logic.listModels()}
    assert listed["tiny-remote"]["path"] is None and "downloaded on first use" in listed["tiny-remote"]["description"]
    job = logic.enhance(load_volume(small_lr(tmp_path / "lr.nii.gz"), "lr"), model="tiny-remote",
                        waitForCompletion=False)
    deadline = time.monotonic() + 60
    while job.poll() == "running" and not (job.total and job.unit.startswith("kB")):
        assert time.monotonic() < deadline, "no download progress"
        time.sleep(0.05)
    job.cancel()
    while job.poll() == "running":
        assert time.monotonic() < deadline + 60
        time.sleep(0.1)
    assert job.status == "cancelled"
    assert not (catalog.cache_dir() / weights.name).exists() and leftovers(catalog.cache_dir()) == []
