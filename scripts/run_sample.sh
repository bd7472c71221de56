#!/usr/bin/env bash
# README command 1: set up, then evaluate and enhance the bundled real MRI sample into out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
MR=.venv/bin/mrsuperres
SAMPLE=Resources/SampleData/colin27_t1_brain_slab.nii.gz
mkdir -p out
$MR models                                   # the default, mri-x4-fidelity, ships in Resources/Models
$MR evaluate "$SAMPLE" --scale 4 --degrade bilinear --axis 2 --out out/evaluation
$MR degrade "$SAMPLE" -o out/sample_lr.nii.gz --scale 4 --degrade kspace --axis 2
$MR enhance out/sample_lr.nii.gz -o out/sample_sr.nii.gz
echo "outputs: out/evaluation/{metrics.json,per_slice.csv,figure.png}, out/sample_lr.nii.gz, out/sample_sr.nii.gz"
