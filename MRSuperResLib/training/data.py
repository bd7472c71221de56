"""Training data: volumes -> normalised non-blank slices -> random (LR, HR) patch pairs.

Each volume is min-max normalised to [0, 1] and sliced along one axis or all three
(augmentation). Blank slices (no voxel above 0) are dropped, as are slices smaller than the
patch (a volume with no slice big enough is refused). A patch is a random crop of a random
slice (never padded), re-drawn up to 10 times while it holds almost no tissue, then flipped
and rotated by a multiple of 90 degrees; its LR is made on the fly. All randomness comes from
one numpy Generator whose state goes into checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine import working_range
from ..scans import geometry
from ..errors import MRSuperResError
from ..options import HR_NOISE_SIGMA
from ..files import sha256_of
from .degradation import add_rician, make_lr
from ..scans.volumes import normalise, read_volume

TISSUE_LEVEL = 0.05        # a patch needs some voxels above this to count as tissue


@dataclass
class VolumeInfo:
    path: str
    shape: tuple
    sha256: str
    axial: int = 2          # the voxel axis closest to superior-inferior (validation slices are across it)


def axes_for(axis: str | int) -> list[int]:
    if str(axis) == "all":
        return [0, 1, 2]
    if str(axis) in ("0", "1", "2"):
        return [int(axis)]
    raise MRSuperResError(f"--axis must be 0, 1, 2 or all, not {axis!r}")


def load_normalised(path: str) -> tuple[np.ndarray, VolumeInfo]:
    """The volume in [0, 1] as the network sees it at inference: min-max, then, where a few bright
    voxels set the range, clipped at the working range's ceiling and stretched (engine/working_range;
    none of the known training volumes is), so that `train --self` on such a scan learns the
    contrast it will be run on."""
    volume = read_volume(path)
    data = normalise(volume.data)
    data = working_range.split(data, working_range.ceiling(data))[0]
    return data, VolumeInfo(str(path), tuple(volume.data.shape), sha256_of(path), geometry.axial_axis(volume.affine))


def split_volumes(data: list[str], val: list[str] | None) -> tuple[list[str], list[str], str]:
    """(train paths, validation paths, how): --val if given, else 80/20 by volume (Rashid et al.);
    a single volume is split into slabs instead (see SlicePool.from_paths)."""
    if not data:
        raise MRSuperResError("no training volumes given (--data)")
    if val:
        return list(data), list(val), "given"
    if len(data) == 1:
        return list(data), [], "slab"
    n_val = max(1, round(0.2 * len(data)))
    return list(data[:-n_val]), list(data[-n_val:]), "80/20 by volume"


class SlicePool:
    """All usable 2D slices of some volumes, and a reproducible patch sampler over them. A patch
    comes from a volume drawn uniformly, then from one of its slices: every subject (and so every
    contrast) weighs the same, however many slices it has."""

    def __init__(self, slices: list[np.ndarray], infos: list[VolumeInfo], owners: list[int] | None = None):
        self.slices = slices
        self.infos = infos
        owners = np.zeros(len(slices), int) if owners is None else np.asarray(owners)
        self.by_volume = [np.flatnonzero(owners == v) for v in np.unique(owners)]

    @classmethod
    def from_arrays(cls, arrays: list[tuple[np.ndarray, VolumeInfo]], axes: list[int], min_size: int = 0):
        slices, infos, owners = [], [], []
        for data, info in arrays:
            kept = 0
            for axis in axes:
                stack = geometry.slices_first(data, axis)
                if min(stack.shape[1:]) < min_size:
                    continue
                peaks = stack.reshape(stack.shape[0], -1).max(1)
                for i in np.flatnonzero(peaks > 0):
                    slices.append(np.ascontiguousarray(stack[i]))
                    owners.append(len(infos))
                    kept += 1
            if kept == 0:
                raise MRSuperResError(f"{info.path} {info.shape}: no slice along axis {axes} is at least "
                                      f"{min_size}x{min_size} voxels (the patch size) with tissue in it")
            infos.append(info)
        return cls(slices, infos, owners)

    def __len__(self) -> int:
        return len(self.slices)

    def sample(self, rng: np.random.Generator, patch: int, scale: int, methods: list[str],
               augment: bool = True, hr_noise: float = 0.0,
               hr_noise_sigma: tuple[float, float] = HR_NOISE_SIGMA,
               thick: tuple | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
        """(LR, HR, noisy): LR (patch/s, patch/s), HR (patch, patch), float32 in [0, 1]. With
        probability `hr_noise` the HR patch first gets scan-like Rician noise, sigma uniform in
        `hr_noise_sigma` (`noisy` says so)."""
        for _ in range(10):
            own = self.by_volume[rng.integers(len(self.by_volume))] if len(self.by_volume) > 1 else None
            image = self.slices[rng.integers(len(self.slices)) if own is None else own[rng.integers(len(own))]]
            y = rng.integers(image.shape[0] - patch + 1)
            x = rng.integers(image.shape[1] - patch + 1)
            hr = image[y:y + patch, x:x + patch]
            if (hr > TISSUE_LEVEL).mean() > 0.05:
                break
        if augment:
            if rng.random() < 0.5:
                hr = hr[:, ::-1]
            if rng.random() < 0.5:
                hr = hr[::-1, :]
            hr = np.rot90(hr, int(rng.integers(4)))
        hr = np.ascontiguousarray(hr, dtype=np.float32)
        noisy = bool(hr_noise > 0 and rng.random() < hr_noise)
        if noisy:
            hr = np.clip(add_rician(hr, rng.uniform(*hr_noise_sigma), rng), 0, 1).astype(np.float32)
        return make_lr(hr, scale, methods, rng, thick), hr, noisy

    def batch(self, rng: np.random.Generator, size: int, patch: int, scale: int, methods: list[str],
              hr_noise: float = 0.0, hr_noise_sigma: tuple[float, float] = HR_NOISE_SIGMA,
              thick: tuple | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(LR (N, 1, h, w), HR (N, 1, H, W), noisy (N,) bool: which targets got `hr_noise`)."""
        samples = [self.sample(rng, patch, scale, methods, hr_noise=hr_noise, hr_noise_sigma=hr_noise_sigma,
                               thick=thick)
                   for _ in range(size)]
        return (np.stack([s[0] for s in samples])[:, None], np.stack([s[1] for s in samples])[:, None],
                np.array([s[2] for s in samples], dtype=bool))


def load_pools(data: list[str], val: list[str] | None, axis: str | int, patch: int):
    """(training pool, validation slices as [(volume name, [(H, W) slices])], how the split was
    made, training infos, validation infos). Validation slices are axial (across each volume's
    axial axis) when training takes every orientation, else along the training axis."""
    train_paths, val_paths, how = split_volumes(data, val)
    axes = axes_for(axis)
    train_arrays = [load_normalised(p) for p in train_paths]
    val_arrays = [load_normalised(p) for p in val_paths]
    if how == "slab":                        # one volume: the last 20% along its last axis validates
        data0, info = train_arrays[0]
        cut = int(round(0.8 * data0.shape[2]))
        if cut < 1 or cut >= data0.shape[2]:
            raise MRSuperResError(f"{info.path}: too few slices ({data0.shape[2]}) to hold out a validation slab")
        train_arrays = [(data0[:, :, :cut], info)]
        val_arrays = [(data0[:, :, cut:], info)]
    pool = SlicePool.from_arrays(train_arrays, axes, min_size=patch)
    groups = []
    for arr, info in val_arrays:
        ax = axes[0] if len(axes) == 1 else (2 if how == "slab" else info.axial)
        stack = geometry.slices_first(arr, ax)
        keep = np.flatnonzero(stack.reshape(stack.shape[0], -1).max(1) > 0)
        groups.append((Path(info.path).name, [stack[i] for i in keep]))
    return pool, groups, how, [i for _, i in train_arrays], [i for _, i in val_arrays]


def validation_set(groups: list[tuple[str, list[np.ndarray]]], scale: int, count: int = 16, size: int = 128,
                   thick: tuple | None = None) -> list[tuple[str, np.ndarray, np.ndarray]] | None:
    """A fixed subset per validation volume, [(name, LR, HR)]: `count` crops in all, shared
    evenly (at least 6 a volume), each an evenly spaced slice's centre crop (at most size x size,
    multiples of the scale) that holds tissue. LR by Rashid et al.'s bilinear degradation (scale
    1: the `thick` degradation, drawn from a fixed seed so every validation sees the same inputs).
    Each volume is scored on its own so that a run is judged on the mean over subjects."""
    sets = []
    per_volume = max(6, -(-count // max(1, len(groups))))
    for name, slices in groups:
        made = _validation_crops(slices, scale, per_volume, size, thick)
        if made is not None:
            sets.append((name, *made))
    return sets or None


def _validation_crops(slices: list[np.ndarray], scale: int, count: int, size: int, thick: tuple | None):
    from ..scans.resample import downsample

    candidates = []
    for s in slices:
        h = min(size, s.shape[0]) // scale * scale
        w = min(size, s.shape[1]) // scale * scale
        if h < 8 * scale or w < 8 * scale:
            continue
        y0, x0 = (s.shape[0] - h) // 2, (s.shape[1] - w) // 2
        crop = s[y0:y0 + h, x0:x0 + w]
        if (crop > TISSUE_LEVEL).mean() >= 0.05:     # a crop of air would score PSNR = inf
            candidates.append(crop)
    if not candidates:
        return None
    picks = np.linspace(0, len(candidates) - 1, min(count, len(candidates))).round().astype(int)
    crops = [candidates[i] for i in picks]
    h = min(c.shape[0] for c in crops)
    w = min(c.shape[1] for c in crops)
    hr = np.stack([c[:h, :w] for c in crops]).astype(np.float32)
    if scale == 1:
        rng = np.random.default_rng(20261203)
        return np.stack([make_lr(x, 1, ["thick"], rng, thick) for x in hr]), hr
    return np.clip(downsample(hr, scale, "bilinear"), 0, 1), hr


class Prefetcher:
    """Makes the next batch on a worker thread while the network trains on the current one.

    One producer draws from `rng` in order, so the batches are exactly those of a serial loop;
    each comes with the generator state after it was drawn, which is what a checkpoint must
    store for a resume to continue the same sequence.
    """

    def __init__(self, pool: SlicePool, rng: np.random.Generator, size: int, patch: int, scale: int,
                 methods: list[str], hr_noise: float = 0.0, hr_noise_sigma: tuple[float, float] = HR_NOISE_SIGMA,
                 thick: tuple | None = None):
        import queue
        import threading

        self._args = (rng, size, patch, scale, methods, hr_noise, hr_noise_sigma, thick)
        self._pool = pool
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="mrsuperres-batches", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        import queue

        rng, size, patch, scale, methods, hr_noise, hr_noise_sigma, thick = self._args
        while not self._stop.is_set():
            try:
                batch = self._pool.batch(rng, size, patch, scale, methods, hr_noise, hr_noise_sigma, thick)
                item = (*batch, rng.bit_generator.state)
            except BaseException as exc:        # handed to the training thread, raised there
                item = exc
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return

    def next(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """(LR batch, HR batch, noisy flags, numpy generator state after drawing them)."""
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
