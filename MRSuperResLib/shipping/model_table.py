"""Print the shipped models' figures per subject and contrast as Markdown tables, from their cards
(what the README's and docs/models.md's model tables are made from, so they never drift).

    python scripts/maintainers/model_table.py                 # gains over bicubic, PSNR dB / SSIM, per subject
    python scripts/maintainers/model_table.py --full          # docs: absolute figures, and the gain over the previous version
"""
from __future__ import annotations

import argparse
import json

from ..options import PROJECT_DIR

MODELS = PROJECT_DIR / "Resources" / "Models"


def rows_of(card: dict) -> list[tuple[str, dict]]:
    """(role, row) for each scored subject of a card in the multi-subject format."""
    validation = card.get("validation") or {}
    return ([("validation", r) for r in validation.get("subjects", [])] +
            [("independent", r) for r in card.get("independent_check") or [] if "subject" in r])


def label(row: dict) -> str:
    return f"{row['volume'].split('.')[0]} ({row.get('contrast') or '?'})"


def gain(row: dict, key: str = "gain_over_bicubic") -> str:
    g = row.get(key)
    return f"{g['psnr']:+.2f} / {g['ssim']:+.3f}" if g else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    cards = {p.stem: json.loads(p.read_text()) for p in sorted(MODELS.glob("mri-x*.json"))}
    cards = {k: c for k, c in cards.items() if rows_of(c)}
    subjects = {}
    for name, card in cards.items():
        for role, row in rows_of(card):
            subjects.setdefault((role, label(row)), {})[name] = row
    if not args.full:
        print("| subject (contrast) | role | " + " | ".join(f"`{n}` (x{c['scale']})" for n, c in cards.items()) + " |")
        print("|---|---|" + "---|" * len(cards))
        for (role, subject), by_model in subjects.items():
            print(f"| {subject} | {role} | " + " | ".join(gain(by_model[n]) if n in by_model else "-"
                                                        for n in cards) + " |")
        return
    for name, card in cards.items():
        print(f"\n**{name}** (x{card['scale']}): SSIM / PSNR dB / VIF; gain over bicubic and over the previous "
              "version in PSNR dB / SSIM\n")
        print("| subject (contrast) | role | slices | model | bicubic | gain over bicubic | over previous |")
        print("|---|---|---|---|---|---|---|")
        for role, row in rows_of(card):
            m, b = row["metrics_mean"][name], row["metrics_mean"]["bicubic"]
            fmt = lambda v: f"{v['ssim']:.4f} / {v['psnr']:.2f} / {v['vif']:.3f}"
            print(f"| {label(row)} | {role} | {row['slices']} | {fmt(m)} | {fmt(b)} | {gain(row)} | "
                  f"{gain(row, 'gain_over_previous')} |")
        mean = card["validation"]["metrics_mean"]
        print(f"| **validation mean** | | | {mean[name]['ssim']:.4f} / {mean[name]['psnr']:.2f} / "
              f"{mean[name]['vif']:.3f} | {mean['bicubic']['ssim']:.4f} / {mean['bicubic']['psnr']:.2f} / "
              f"{mean['bicubic']['vif']:.3f} | {mean[name]['psnr'] - mean['bicubic']['psnr']:+.2f} / "
              f"{mean[name]['ssim'] - mean['bicubic']['ssim']:+.3f} | " +
              (f"{mean[name]['psnr'] - mean['previous']['psnr']:+.2f} / "
               f"{mean[name]['ssim'] - mean['previous']['ssim']:+.3f}" if "previous" in mean else "-") + " |")


if __name__ == "__main__":
    main()
