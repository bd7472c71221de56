"""Rebuild Resources/SampleData/colin27_t1_brain_slab.nii.gz from its Debian package.

Source: Debian `mricron-data` 1.2.20211006+dfsg-4, usr/share/mricron/templates/ch2bet.nii.gz
(Colin27 T1, brain extracted, 181x217x181 @ 1 mm; BSD-3). The sample is the slab of axial
slices k = 56..103, cropped in-plane to i = 16..163, j = 16..199 (148 x 184 x 48 voxels, both
in-plane sizes multiples of 4), uint8, with the affine shifted to the crop.

    apt-get download mricron-data && dpkg-deb -x mricron-data_*.deb pkg
    python scripts/maintainers/make_sample_data.py pkg/usr/share/mricron/templates/ch2bet.nii.gz
"""
import hashlib
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

SOURCE_SHA256 = "592a2d20abdf36eefcb540ca8958428040edffc1bc1a18ba1dcfbabac77c5dd1"
CROP = (slice(16, 164), slice(16, 200), slice(56, 104))
OUT = Path(__file__).resolve().parents[2] / "Resources" / "SampleData" / "colin27_t1_brain_slab.nii.gz"


def main(source: str) -> None:
    digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()
    if digest != SOURCE_SHA256:
        sys.exit(f"{source}: sha256 {digest} is not the expected {SOURCE_SHA256}")
    img = nib.load(source)
    data = np.asarray(img.dataobj)[CROP]
    affine = img.affine.copy()
    affine[:3, 3] = img.affine[:3, :3] @ [c.start for c in CROP] + img.affine[:3, 3]
    out = nib.Nifti1Image(data.astype(np.uint8), affine)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    nib.save(out, OUT)
    print(f"{OUT}: {data.shape}, sha256 {hashlib.sha256(OUT.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main(sys.argv[1])
