"""Rashid et al.'s Figure 3: ground truth | LR | model | bilinear | bicubic, with a zoomed detail row;
then the maps: |model - GT|, the consistency map and (with --maps) the uncertainty and detail maps."""
from __future__ import annotations

import io

import numpy as np

PANELS = (("gt", "Ground truth"), ("lr", "Low resolution"), ("model", "{model}"),
          ("bilinear", "Bilinear"), ("bicubic", "Bicubic"), ("cubic", "Cubic across slices"))
MAP_PANELS = (("error", "|{model} - GT|"), ("consistency", "Consistency map"), ("uncertainty", "Uncertainty map"),
              ("detail", "Detail map"))


def detail_window(image: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the size x size window with the most edge energy."""
    from scipy.ndimage import uniform_filter

    gy, gx = np.gradient(image.astype(np.float64))
    energy = uniform_filter(gy * gy + gx * gx, size=size, mode="constant")
    h, w = image.shape
    half = size // 2
    inner = energy[half: h - size + half + 1, half: w - size + half + 1]
    y, x = np.unravel_index(np.argmax(inner), inner.shape)
    return int(y), int(x)


def comparison_figure(data: dict, scale: int, degradation: str, model_name: str) -> bytes:
    """PNG bytes of the five-panel comparison of one slice (images in [0, 1])."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Rectangle

    # slices are (first, second in-plane axis); show the second axis upwards (anterior or
    # superior at the top for RAS-like volumes)
    view = lambda image: np.asarray(image).T[::-1]  # noqa: E731
    maps = {k: np.abs(view(v)) for k, v in (data.get("maps") or {}).items()}
    data = {**data, "gt": view(data["gt"]), "lr": view(data["lr"]),
            "outputs": {k: view(v) for k, v in data["outputs"].items()}}
    # error and consistency share one colour scale (both are intensity differences)
    shared = max([float(np.percentile(maps[k], 99.5)) for k in ("error", "consistency") if k in maps] + [1e-3])
    gt = data["gt"]
    h, w = gt.shape
    size = max(8, min(h, w) // 4)
    y0, x0 = detail_window(gt, size)
    panels = [(key, title.format(model=model_name)) for key, title in PANELS
              if key in ("gt", "lr") or key in data["outputs"]]
    panels += [(key, title.format(model=model_name)) for key, title in MAP_PANELS if key in maps]
    fig, axes = plt.subplots(2, len(panels), figsize=(3.0 * len(panels), 3.0 * h / w + 3.4), dpi=110,
                             gridspec_kw={"height_ratios": [h / w, 1.0]})
    for column, (key, title) in enumerate(panels):
        top, zoom = axes[0, column], axes[1, column]
        if key == "gt":
            image, extent, sub = gt, None, "reference"
        elif key == "lr":
            image, extent = data["lr"], (-0.5, w - 0.5, h - 0.5, -0.5)
            sub = f"{'' if scale == 1 else f'x{scale} '}{degradation}, {data['lr'].shape[1]}x{data['lr'].shape[0]}"
        elif key in maps:
            image, extent = maps[key], None
        else:
            image, extent = data["outputs"][key], None
            m = data["metrics"][key]
            sub = f"PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.3f}"
        colours = dict(cmap="gray", vmin=0, vmax=1)
        if key in maps:
            vmax = shared if key in ("error", "consistency") else max(float(np.percentile(image, 99.5)), 1e-3)
            colours = dict(cmap="magma", vmin=0, vmax=vmax)
            sub = f"0 to {vmax:.3f} of the range"
        for ax in (top, zoom):
            ax.imshow(image, interpolation="nearest", extent=extent, **colours)
            ax.set_xticks([])
            ax.set_yticks([])
        top.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), size, size, fill=False, edgecolor="yellow", lw=1))
        zoom.set_xlim(x0 - 0.5, x0 + size - 0.5)
        zoom.set_ylim(y0 + size - 0.5, y0 - 0.5)
        for spine in zoom.spines.values():
            spine.set_edgecolor("yellow")
        top.set_title(title, fontsize=10)
        zoom.set_xlabel(sub, fontsize=8)
    fig.suptitle(f"{data['volume']}, slice {data['slice']}", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
