#!/usr/bin/env bash
# How the shipped MRI models are trained (issue 6). Each stage is resumable: run the same
# command again and it continues from the newest checkpoint in its run folder.
#
#   bash scripts/maintainers/train_shipped_models.sh fidelity     # psnr stage from RealESRGAN_x4plus (1-channel)
#   bash scripts/maintainers/train_shipped_models.sh fidelity2    # psnr stage 2: + scan noise on HR (--hr-noise)
#   bash scripts/maintainers/train_shipped_models.sh gan          # gan stage from the shipped fidelity model
#   bash scripts/maintainers/train_shipped_models.sh fidelity-v2  # v2 and v3: every training subject, T1 and T2, from v1
#   bash scripts/maintainers/train_shipped_models.sh x2-fidelity  # x2: the x4 network supersampled, trained at x2
#   bash scripts/maintainers/train_shipped_models.sh x8-fidelity  # x8: the x4 network with a third upsampling stage, at x8
#   bash scripts/maintainers/train_shipped_models.sh gan-v2       # v2 gan stage from mri-x4-fidelity v2, on the v2 data
#   bash scripts/maintainers/train_shipped_models.sh x2-gan       # gan stage from mri-x2-fidelity, at x2
#
# Options after the stage go to `mrsuperres train` and override the recipe's, e.g. on a GPU (a new
# run folder: a resumed run refuses a changed batch or patch):
#   RUNS=~/gpu-runs bash scripts/maintainers/train_shipped_models.sh fidelity-v2 --device cuda --batch 16 --patch 128
# (128 is the largest patch every v2 training subject gives in at least one orientation: the ROBEX
# atlas is 116 x 150 x 155 voxels.)
#
# v1 training data: pycortex S1 and MNI152 2009a (all three orientations, flips and 90-degree
# rotations); Colin27 (ch2, full head) held out for validation. v2: the training subjects of
# MRSuperResLib/models/datasets.py (T1 and T2; each subject weighs the same), validated on the mean over
# its validation subjects; then scripts/maintainers/ship_model.py RUN --name NAME --select ships the best
# checkpoint only if it beats the shipped model. RUNS defaults to ~/mrsuperres-runs (outside
# the repository).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-$HOME/mrsuperres-runs}
DATA=${MRSUPERRES_HOME:-$HOME/.cache/mrsuperres}/data
.venv/bin/python scripts/fetch_training_data.py >/dev/null
COMMON=(--data "$DATA/pycortex-s1.nii.gz" "$DATA/mni152-2009a.nii.gz" --val "$DATA/colin27-ch2.nii.gz"
        --axis all --degrade bilinear,bilinear,bilinear,bicubic,mri --precision auto)
# How the shipped models were made (each run was ended with a STOP file; the cards'
# learning_rate_schedule, iterations and wall_seconds record what actually ran):
#   fidelity   lr 1e-4 to iteration 2408, then LR=5e-5 to 2759
#   fidelity2  lr 1e-4 to iteration 1566, then LR=5e-5 to 2204; ship_model.py (EMA) -> mri-x4-fidelity
#   gan        lr 1e-4 to iteration 1002 (stopped); ship_model.py --checkpoint 600 (EMA) -> mri-x4-gan:
#              the last checkpoint whose EMA met the validation targets on Colin27 (SSIM >= bicubic,
#              VIF >= bicubic + 0.03) with a 10% margin (VIF >= +0.033), full evaluate protocol:
#              +0.0336 at 600, +0.0327 at 700, +0.0307 at 800, +0.0283 at 900, +0.0277 at 1000
V2=(--data "$DATA/pycortex-s1.nii.gz" "$DATA/mni152-2009a.nii.gz" "$DATA/pyradiomics-brain1.nrrd"
    "$DATA/robex-atlas.nii.gz" "$DATA/heudiconv-b0.nii"
    --val "$DATA/colin27-ch2.nii.gz" "$DATA/pyradiomics-brain2.nrrd" "$DATA/sdcflows-epi.nii.gz"
    --axis all --degrade bilinear,bilinear,bilinear,bicubic,mri --precision bf16 --stage psnr --hr-noise 0.5
    --batch 8 --patch 96 --checkpoint-every 100 --val-every 100 --keep 60 --iters "${ITERS:-6000}")
# v2 (2026-12-05) ran as two processes side by side, OMP_NUM_THREADS=1 each; each first ran ~100
# iterations on the T1 volumes only (then stopped, and the run below started from its EMA). The
# fidelity-v2 run was stopped at 777; ship_model.py --select shipped its raw generator at 600 (v2).
# v3: the same run resumed, LR=1e-4 to 2481, then LR=2e-5 to 4223 (then to 5000, which gained nothing);
# scripts/maintainers/rank_checkpoints.py chose its raw generator at 4000, shipped by ship_model.py RUN --name
# mri-x4-fidelity --partner mri-x4-gan --checkpoint 4000 --weights generator. gan-v2 and x2-fidelity
# started from v2 (in the git history); run now, --init mri-x4-fidelity takes v3.
STAGE=${1:-}
EXTRA=("${@:2}")
# Every stage trains through this: --resume when $OUT already holds the run, and the caller's further
# options last, so that the last of a repeated option wins.
train() {
  local again=(); [ -f "$OUT/config.json" ] && again=(--resume)
  .venv/bin/mrsuperres train "$@" --out "$OUT" "${again[@]}" "${EXTRA[@]}"
}
case "$STAGE" in
  fidelity)
    OUT=$RUNS/mri-x4-fidelity
    train "${COMMON[@]}" --stage psnr --init realesrgan \
      --iters "${ITERS:-4000}" --batch 8 --patch 96 --lr "${LR:-1e-4}" --checkpoint-every 200 ;;
  fidelity2)
    # Stage 1 learnt on clean-background volumes and wiped out scan noise, which costs SSIM on real
    # noisy scans; stage 2 starts from its raw generator and adds Rician noise to half the HR patches.
    OUT=$RUNS/mri-x4-fidelity2
    INIT=$RUNS/mri-x4-fidelity-stage1.safetensors
    [ -f "$INIT" ] || .venv/bin/python scripts/maintainers/export_generator.py "$RUNS/mri-x4-fidelity" "$INIT" --name mri-x4-fidelity-stage1
    train "${COMMON[@]}" --stage psnr --init "$INIT" --hr-noise 0.5 \
      --iters "${ITERS:-4000}" --batch 8 --patch 96 --lr "${LR:-1e-4}" --checkpoint-every 200 ;;
  gan)
    # Perceptual 0.005 and adversarial 0.02: at Real-ESRGAN's 1 and 0.1 the perceptual gradient is
    # ~137x L1's (scripts/maintainers/loss_gradients.py) and the generator fell far below bicubic. --hr-noise 0.5
    # as in fidelity2, so the model keeps carrying scan noise; those noisy targets train L1 only
    # (the perceptual and adversarial losses would learn to paint noise). Its sigma starts at 0.002
    # (--hr-noise-sigma), as low as the mri chain's LR noise on clean targets, which teaches the
    # model to darken a scan's faint noise floor (the README says how little this changed).
    # Validation (with VIF) every 100 iterations; every checkpoint is kept so one can be picked by it.
    OUT=$RUNS/mri-x4-gan5
    train "${COMMON[@]}" --stage gan --init mri-x4-fidelity \
      --perceptual-weight 0.005 --gan-weight 0.02 --hr-noise 0.5 --hr-noise-sigma 0.002,0.03 \
      --iters "${ITERS:-4000}" --batch 4 --patch 96 --checkpoint-every 100 --val-every 100 --keep 30 ;;
  fidelity-v2)
    OUT=$RUNS/mri-x4-fidelity-v2
    train "${V2[@]}" --init "${INIT:-mri-x4-fidelity}" --lr "${LR:-5e-5}" ;;
  x2-fidelity)
    # --supersample 2: the x4 network run at the input's resolution, its output box-averaged 2x2
    # (MRSuperResLib/models/rrdbnet.py); from an x4 --init every weight is taken as it is, so training
    # starts where the x4 model is. Patch 64 (32-voxel inputs: the trunk runs at the input's size).
    # 2026-12-05: the earlier x2 (BasicSR's pixel-unshuffle x2 from the x4 trunk, --input-skip,
    # 901 iterations) reached +0.34 dB over bicubic and lost on Colin27 (docs/models.md).
    # Shipped: stopped at 1050 (56 min, 2 threads); that run validated with anchor (--consistency
    # came later). The raw generator of checkpoint 1050 had the best exact-step gain on every third
    # slice of the validation subjects: ship_model.py RUN --name mri-x2-fidelity --checkpoint 1050
    # --weights generator --consistency exact
    OUT=$RUNS/mri-x2-super
    train "${V2[@]}" --scale 2 --supersample 2 --patch 64 --consistency exact \
      --init "${INIT:-mri-x4-fidelity}" --lr "${LR:-5e-5}" ;;
  x8-fidelity)
    # x8 (the two-stage ESRGAN thesis' last factor): every weight of the x4 network, a third upsampling
    # stage that starts as the identity (init_networks.transfer_to_scale), patch 128 (16-voxel inputs).
    OUT=$RUNS/mri-x8-fidelity
    train "${V2[@]}" --scale 8 --patch 128 --checkpoint-every 250 --val-every 250 \
      --init "${INIT:-mri-x4-fidelity}" --lr "${LR:-1e-4}" ;;
  gan-v2|x2-gan)
    # The v1 gan recipe (loss weights, --hr-noise) on the v2 data and subjects, from the shipped v2
    # fidelity model, so that --detail blends a model with its own GAN fine-tune. V2's --batch 8 is
    # overridden by the later --batch 4, as v1's gan stage ran.
    # 2026-12-05, gan-v2: 2,000 iterations, 47 min on the 2 threads; its final EMA ships (ship_model.py
    # RUN --name mri-x4-gan --partner mri-x4-fidelity). x2-gan: stopped at 1,591 (67 min, the first 721
    # on one thread beside other work); its final EMA ships (ship_model.py RUN --name mri-x2-gan
    # --partner mri-x2-fidelity --consistency exact; later runs find exact in the --init card themselves).
    if [ "$STAGE" = gan-v2 ]; then OUT=$RUNS/mri-x4-gan-v2; X=(--init mri-x4-fidelity)
    else OUT=$RUNS/mri-x2-gan; X=(--init mri-x2-fidelity --scale 2 --supersample 2 --patch 64); fi
    train "${V2[@]}" --stage gan "${X[@]}" --iters "${ITERS:-2000}" \
      --perceptual-weight 0.005 --gan-weight 0.02 --hr-noise-sigma 0.002,0.03 --batch 4 --lr 1e-4 --keep 30 ;;
  *) echo "usage: $0 fidelity|fidelity2|gan|fidelity-v2|x2-fidelity|x8-fidelity|gan-v2|x2-gan [train options]" >&2; exit 2 ;;
esac
