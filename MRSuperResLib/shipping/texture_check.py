"""How close each model's texture is to the truth, beyond PSNR/SSIM/VIF.

    python scripts/maintainers/texture_check.py MODEL [MODEL ...] [--every 3] [--val VOLUME ...]

For every validation subject (default: `datasets.validation_files()`, one volume a subject), axial
non-blank slices (one in `--every`; blank as `datasets.BLANK`), Rashid et al.'s bilinear
degradation at the models' scale (all models given share one), default inference (as
`evaluate` runs it), and bicubic beside the models:

- perceptual distance: the GAN stage's own perceptual loss (VGG features, the realesrgan preset's
  layers and weights, L1) between output and truth, mean over slices; lower is closer. A GAN
  model is meant to lower it; a fidelity model gets there only by being close in every pixel.
- gradient ratio: the mean gradient magnitude of the output over the truth's, inside tissue
  (truth > 0.05). Below 1 the output is smoother than the scan (bicubic 0.6-0.8 at x4), above 1 it
  invents edges.

MODEL: a shipped or cached model name, a weights file, or RUN:ITER:ema|generator (a training
checkpoint).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..scans import geometry
from ..options import home_dir
from ..models.candidates import load_network
from ..models.datasets import BLANK, validation_files
from ..errors import MRSuperResError
from ..evaluation.slices import pad_to_multiple, prepare_slices
from ..pipeline.enhance import super_resolve_slices
from ..scans.resample import downsample, upsample
from ..training.config import PRESETS
from ..training.vgg import load_vgg
from ..scans.volumes import read_volume

TISSUE = 0.05


@torch.no_grad()
def perceptual_distance(vgg, layers: dict[str, float], out: np.ndarray, truth: np.ndarray) -> float:
    total = 0.0
    for i in range(0, len(out), 8):
        fo = vgg(torch.from_numpy(out[i:i + 8])[:, None].float())
        ft = vgg(torch.from_numpy(truth[i:i + 8])[:, None].float())
        total += sum(w * F.l1_loss(fo[n], ft[n]).item() * len(fo[n]) for n, w in layers.items())
    return total / len(out)


def gradient_magnitude(stack: np.ndarray, mask: np.ndarray) -> float:
    gy, gx = np.gradient(stack, axis=(1, 2))
    return float(np.hypot(gx, gy)[mask].mean())


def main() -> None:
    try:
        run()
    except MRSuperResError as exc:                # bad input: one line, nothing written
        raise SystemExit(f"texture_check: {exc}") from None


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--every", type=int, default=3, help="score every N-th non-blank axial slice")
    parser.add_argument("--val", type=Path, nargs="+", default=None)
    args = parser.parse_args()
    models = {spec: load_network(spec) for spec in args.models}
    scales = {m.scale for m in models.values()}
    if len(scales) != 1 or scales == {1}:
        raise SystemExit(f"give in-plane models of one scale (got x{', x'.join(map(str, sorted(scales)))})")
    scale = scales.pop()
    vgg, layers, _ = load_vgg(PRESETS["realesrgan"]["layers"], allow_download=False)
    if args.val is None:
        args.val = [home_dir() / "data" / name for name in validation_files()]
    missing = [str(p) for p in args.val if not p.exists()]
    if missing:
        raise MRSuperResError(f"not found: {', '.join(missing)} (run scripts/fetch_training_data.py)")
    print(f"x{scale}, bilinear, axial, one non-blank slice in {args.every}: perceptual distance (lower is closer) "
          "/ gradient ratio (truth = 1)")
    for path in args.val:
        volume = read_volume(str(path))
        truth, _ = prepare_slices(volume.data, geometry.axial_axis(volume.affine), BLANK)
        truth = pad_to_multiple(truth[::args.every], scale).astype(np.float32)
        lr = np.clip(downsample(truth, scale, "bilinear"), 0, 1)
        outputs = {"bicubic": np.clip(upsample(lr, scale, "bicubic"), 0, 1)}
        outputs.update({spec: super_resolve_slices(m, lr) for spec, m in models.items()})
        mask = truth > TISSUE
        reference = gradient_magnitude(truth, mask)
        for spec, out in outputs.items():
            print(f"{path.name:28s} {spec:40s} {perceptual_distance(vgg, layers, out, truth):.4f} / "
                  f"{gradient_magnitude(out, mask) / reference:.3f}", flush=True)


if __name__ == "__main__":
    main()
