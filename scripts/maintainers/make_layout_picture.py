"""Render the README's picture of the comparison layout with slicer-core (no Slicer app, no GL).

    python scripts/maintainers/make_layout_picture.py [--model NAME] [--out Resources/Screenshots/compare_layout.png]

Loads the bundled Colin27 sample with Slicer's volume reader, runs MRSuperResLogic.compare
(x4, Rashid et al.'s bilinear degradation, axial slices), shows the linked layout, and saves what
the five views show, labelled with each method's mean metrics.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", default=str(ROOT / "Resources" / "Screenshots" / "compare_layout.png"))
    args = parser.parse_args()
    from MRSuperResLib.in_slicer.logic import MRSuperResLogic
    from MRSuperResLib.in_slicer.scene import headless_scene, load_volume

    headless_scene()
    gt = load_volume(ROOT / "Resources" / "SampleData" / "colin27_t1_brain_slab.nii.gz", "Colin27")
    logic = MRSuperResLogic()
    result = logic.compare(gt, model=args.model, scale=4, degradation="bilinear", axis=2)
    logic.showComparison(result)
    print(logic.saveComparisonPicture(result, args.out))


if __name__ == "__main__":
    main()
