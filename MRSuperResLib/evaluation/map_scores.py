"""Does a map find the errors? How well a per-voxel map (consistency, uncertainty) ranks the
patches where the super-resolved image is furthest from the ground truth.

Patches of PATCH x PATCH input voxels (16 x 16 output pixels at x4); patches whose truth and
output are both air (mean below TISSUE of the range) are left out, since agreeing that air is
air would make any map look good. Per patch: the mean |map| and the mean |SR - GT|. Reported:
Spearman's rank correlation between the two, and the share of the worst TOP of patches (by
error) that the map's own top TOP catches (chance: TOP).
"""
from __future__ import annotations

import numpy as np

PATCH = 4            # input voxels a side
TOP = 0.05           # the worst 5% of patches
TISSUE = 0.05        # of the [0, 1] range: a patch with less than this in truth and output is air


def patch_means(stack: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) -> (N, H // size, W // size) means (the ragged edge is left out)."""
    n, h, w = stack.shape
    h, w = h - h % size, w - w % size
    return stack[:, :h, :w].reshape(n, h // size, size, w // size, size).mean((2, 4), dtype=np.float64)


class Ranking:
    """Per-patch values gathered over slices and volumes, scored at the end."""

    def __init__(self, scale: int):
        self.size = PATCH * scale
        self.error: list[np.ndarray] = []
        self.maps: dict[str, list[np.ndarray]] = {}

    def add(self, truth: np.ndarray, output: np.ndarray, maps: dict[str, np.ndarray]) -> None:
        """(N, H, W) arrays on the output grid, in [0, 1] units; maps by name."""
        keep = np.maximum(patch_means(truth, self.size), patch_means(output, self.size)) >= TISSUE
        self.error.append(patch_means(np.abs(output - truth), self.size)[keep])
        for name, m in maps.items():
            self.maps.setdefault(name, []).append(patch_means(np.abs(m), self.size)[keep])

    def scores(self) -> dict:
        """{map name: {"spearman", "top_caught", "chance", "patches"}}."""
        from scipy.stats import spearmanr

        error = np.concatenate(self.error) if self.error else np.zeros(0)
        out = {}
        for name, parts in self.maps.items():
            values = np.concatenate(parts)
            if len(error) < 20 or np.ptp(values) == 0 or np.ptp(error) == 0:
                out[name] = {"spearman": None, "top_caught": None, "chance": TOP, "patches": int(len(error))}
                continue
            k = max(1, int(round(TOP * len(error))))
            worst = set(np.argsort(error)[-k:].tolist())
            flagged = set(np.argsort(values)[-k:].tolist())
            out[name] = {"spearman": float(spearmanr(values, error)[0]), "top_caught": len(worst & flagged) / k,
                         "chance": TOP, "patches": int(len(error))}
        return out


def describe(scores: dict) -> list[str]:
    """Lines for the evaluate table: one per map, saying whether it predicts the error."""
    lines = []
    for name, s in scores.items():
        if s["spearman"] is None:
            lines.append(f"{name} map: too few patches with tissue to score")
            continue
        verdict = "predicts where the error is" if s["spearman"] > 0.3 and s["top_caught"] > 2 * s["chance"] \
            else "does not predict the error well"
        lines.append(f"{name} map vs |SR - GT| over {s['patches']} patches: Spearman {s['spearman']:+.3f}, "
                     f"catches {100 * s['top_caught']:.0f}% of the worst {100 * s['chance']:.0f}% "
                     f"(chance {100 * s['chance']:.0f}%): {verdict}")
    return lines
