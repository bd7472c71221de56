"""How hard each GAN-stage loss pulls on the image: the norm of its gradient with respect to the
super-resolved batch, per unit weight and at the run's weights.

    python scripts/maintainers/loss_gradients.py train --data VOL [VOL ...] --out /tmp/unused --stage gan \
        --init mri-x4-fidelity [--perceptual-weight W] [--gan-weight W] [--batches 4]

The arguments after the script name are `mrsuperres train`'s: the run is prepared with them
(data, init, discriminator, VGG, loss weights) but nothing is trained and nothing is written.
Why: the loss values say little about balance (L1 ~0.02 against perceptual ~1.2), and Adam
moves every parameter at about the same rate whatever the gradient's scale, so which loss shapes
the image is decided by the ratio of these gradients. The shipped GAN's weights were set from it.
"""
from __future__ import annotations

import sys

import numpy as np
import torch


# the generator's losses (Trainer.generator_losses) as printed, and the weight each is multiplied by
LOSSES = {"l1": ("l1", "l1_weight"), "perceptual": ("perceptual", "perceptual_weight"), "gan_g": ("gan", "gan_weight")}


def gradient_norms(trainer, batches: int) -> dict[str, float]:
    """Mean over `batches` training batches of |d loss / d SR| for each of the generator's losses,
    computed exactly as training computes them (fp32 here)."""
    from ..training.loop import clean_targets

    c, dev = trainer.config, trainer.device
    rng = np.random.default_rng(c.seed)
    generator = trainer.generator.to(dev).train()
    norms: dict[str, list[float]] = {}
    for _ in range(batches):
        lr_b, hr_b, noisy = trainer.pool.batch(rng, c.batch, c.patch, c.scale, trainer.methods, c.hr_noise,
                                             tuple(c.hr_noise_sigma))
        lr_t, hr_t = torch.from_numpy(lr_b).to(dev), torch.from_numpy(hr_b).to(dev)
        clean = clean_targets(noisy, dev)
        with torch.no_grad():
            sr = generator(lr_t)
        sr.requires_grad_(True)
        for name, loss in trainer.generator_losses(sr, hr_t, clean).items():
            (grad,) = torch.autograd.grad(loss, sr, retain_graph=True)     # the losses share sr[clean]
            norms.setdefault(name, []).append(float(grad.norm()))
    return {k: float(np.mean(v)) for k, v in norms.items()}


def main() -> None:
    argv = sys.argv[1:]
    batches = 4
    if "--batches" in argv:
        i = argv.index("--batches")
        value = argv[i + 1] if i + 1 < len(argv) else ""
        if not value.isdigit() or int(value) < 1:
            sys.exit(f"loss_gradients: --batches needs a positive whole number, not {value!r}")
        batches = int(value)
        del argv[i:i + 2]
    from ..cli.commands import build_parser
    from ..errors import MRSuperResError
    from ..training.loop import Trainer
    from ..training.config import TrainConfig, build_config

    args = build_parser().parse_args(argv)
    if args.command != "train":
        sys.exit("give `train` and its options after the script name")
    try:
        config = build_config({k: getattr(args, k) for k in TrainConfig.option_names() if hasattr(args, k)})
        trainer = Trainer(config, progress_bar=False)
        trainer.prepare()                  # checks the inputs and builds the networks; writes nothing
    except MRSuperResError as exc:
        sys.exit(f"loss_gradients: {exc}")
    norms = gradient_norms(trainer, batches)
    print(f"|d loss / d SR|, mean of {batches} batches of {config.batch} x {config.patch}px; "
          f"discriminator: {trainer.init_d_desc}")
    print(f"{'loss':<11}{'per unit weight':>17}{'weight':>9}{'weighted':>12}{'vs L1':>8}")
    l1 = norms["l1"] * trainer.weights["l1_weight"]
    for name, value in norms.items():
        label, weight_key = LOSSES[name]
        weight = trainer.weights[weight_key]
        weighted = value * weight
        print(f"{label:<11}{value:>17.3e}{weight:>9g}{weighted:>12.3e}{weighted / l1 if l1 else float('nan'):>8.2f}")


if __name__ == "__main__":
    main()
