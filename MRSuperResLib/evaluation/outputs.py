"""What an evaluation leaves and prints: metrics.json, per_slice.csv and figure.png written
atomically, and the summary table."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..errors import MRSuperResError
from ..files import atomic_write_bytes
from .figure import comparison_figure
from .map_scores import describe
from .metrics import METRICS


def write_outputs(out_dir: Path, result: dict, rows: list[dict], figure_data: dict, model_name: str,
                  fields: list[str] | None = None) -> None:
    """metrics.json, per_slice.csv (columns `fields`) and figure.png, each written atomically."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MRSuperResError(f"cannot create --out {out_dir}: {exc.strerror or exc}") from None
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields or ["volume", "slice", "method", *METRICS], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    png = comparison_figure(figure_data, result["scale"], result["degradation"], model_name)
    atomic_write_bytes(out_dir / "per_slice.csv", buffer.getvalue().encode())
    atomic_write_bytes(out_dir / "figure.png", png)
    atomic_write_bytes(out_dir / "metrics.json", (json.dumps(result, indent=2) + "\n").encode())


def format_table(result: dict) -> str:
    """The summary table printed by `mrsuperres evaluate`."""
    lines = [f"{v['volume']}: {v['kept']} of {v['slices']} slices along axis {v['axis']} kept (others blank)"
             if "kept" in v else f"{v['volume']}: the first {v['voxels_scored']} voxels along axis {v['axis']} "
             f"(whole {v['factor']:g}x slices) scored" for v in result.get("slices_per_volume", [])]
    if "orientations" in result:                 # through-plane: one table per orientation
        for name, methods in result["orientations"].items():
            lines += _table(f"{result['degradation']}, {name} slices (mean +/- std)", methods)
        return "\n".join(lines + describe(result.get("maps") or {}))
    lines += _table(f"x{result['scale']} {result['degradation']}, {result['n_slices']} slices (mean +/- std)",
                    result["methods"])
    if result.get("data_consistency"):
        d, out = result["data_consistency"]["network"], result["data_consistency"]["output"]
        lines.append(f"network output re-acquired (box) vs the LR: RMS {100 * d['rms']:.2f}% of the range, "
                     f"{100 * d['share_above']:.1f}% of voxels off by more than {100 * d['threshold']:.0f}%; "
                     f"after --consistency {result['model']['consistency']}: RMS {100 * out['rms']:.2f}%")
    lines += describe(result.get("maps") or {})
    return "\n".join(lines)


def _table(title: str, methods: dict) -> list[str]:
    lines = [title, f"{'method':10s}" + "".join(f"{m.upper():>17s}" for m in METRICS)]
    for method, stats in methods.items():
        cells = []
        for m in METRICS:
            s = stats[m]
            digits = 2 if m == "psnr" else 4
            cells.append(f"{s['mean']:.{digits}f}+/-{s['std']:.{digits}f}" if s["mean"] is not None else "n/a")
        lines.append(f"{method:10s}" + "".join(f"{c:>17s}" for c in cells))
    return lines
