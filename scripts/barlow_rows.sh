#!/usr/bin/env bash
# The Barlow Twins research rows (issue: Barlow Twins), one heavy job at a time, each resumable: rerun after a
# crash or a stop and every finished run is skipped, an unfinished one continues from its last epoch.
#   scripts/barlow_rows.sh [ROW ...]      rows: see all_rows below
# scratch10 and joint5 are the small equal-budget pair (80,640 image-passes each: 10 epochs x 1 view, 5 x 2)
# that fits one session on the 2-core CPU beside the 50-image-pass pair.
# Data: the 160 px set (DATA_160, default ../shared/data/imagewoof2-160); runs go to runs/research/.
# Then: .venv/bin/python scripts/barlow_report.py (reports/barlow_twins.md). Val is scored once per row.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${DATA_160:-../shared/data/imagewoof2-160}"
woof=".venv/bin/woof"
out="runs/research"
configs="training/configs/research"
rows=("$@")
all_rows=(scratch5 scratch10 joint5 joint5w views5 joint5t views5t bt knn probe finetune joint scratch imagenet imagenet-bt)
[ ${#rows[@]} -gt 0 ] || rows=("${all_rows[@]}")

train() {  # NAME RECIPE [FLAGS...]: train once (resume if interrupted), then score val once
  local name="$1" recipe="$2"; shift 2
  if [ ! -f "$out/$name/model.safetensors" ]; then
    if [ -f "$out/$name/last.pt" ]; then
      $woof train --out "$out/$name" --data "$data" --resume --quiet
    else
      $woof train --config "$configs/$recipe.yaml" --data "$data" --out "$out/$name" --name "$name" --quiet "$@"
    fi
  fi
  [ -f "$out/$name/report/metrics.json" ] || $woof eval "$out/$name" --data "$data" --update-card --quiet
}

pretrain() {  # NAME RECIPE: Barlow Twins pretraining once (resume if interrupted); no labels, nothing scored
  local name="$1" recipe="$2"
  [ ! -f "$out/$name/model.safetensors" ] || return 0
  if [ -f "$out/$name/last.pt" ]; then
    $woof pretrain --out "$out/$name" --data "$data" --resume --quiet
  else
    $woof pretrain --config "$configs/$recipe.yaml" --data "$data" --out "$out/$name" --quiet
  fi
}

for row in "${rows[@]}"; do
  case "$row" in
    scratch5) train scratch-ce-128-5ep scratch_ce_128 --epochs 5 ;;
    scratch10) train scratch-ce-128-10ep scratch_ce_128 --epochs 10 ;;
    joint5) train joint-bt-ce-128-5ep joint_bt_ce_128 --epochs 5 ;;
    # the same with the Barlow Twins term scaled to the cross-entropy's size at the start (its loss is ~2,000
    # there, the cross-entropy's ~2.3): at 0.1 the term is ~100x the cross-entropy and the labels barely count
    joint5w) train joint-bt-ce-128-5ep-w0.001 joint_bt_ce_128 --epochs 5 --barlow-weight 0.001 ;;
    # the control: the joint loop with the Barlow Twins term weighed to nothing (1e-9): cross-entropy on the two
    # Barlow Twins views alone, to tell the term's effect from its augmentations' and half the optimiser steps
    views5) train two-view-ce-128-5ep joint_bt_ce_128 --epochs 5 --barlow-weight 1e-9 ;;
    # the same pair at equal optimiser steps too, with the recipe's own crop-and-flip as the two views: batch 32
    # photos x 2 views = the 64 images a step of scratch10, 1,265 steps (scratch10: 1,260); and its 1e-9 control
    joint5t) train joint-bt-ce-128-5ep-train-views joint_bt_ce_128 --epochs 5 --barlow-views train --batch-size 32 ;;
    views5t) train two-view-ce-128-5ep-train-views joint_bt_ce_128 --epochs 5 --barlow-views train --batch-size 32 \
      --barlow-weight 1e-9 ;;
    scratch) train scratch-ce-128 scratch_ce_128 ;;
    bt) pretrain bt-pretrain-96 bt_pretrain_96 ;;
    knn)
      if [ -f "$out/bt-pretrain-96/model.safetensors" ] && [ ! -f "$out/bt-pretrain-96/knn.json" ]; then
        $woof knn "$out/bt-pretrain-96" --data "$data" --size 128 --quiet
      fi
      [ -f "$out/random-lite0/knn.json" ] || $woof knn --random efficientnet_lite0 --data "$data" --size 128 \
        --out "$out/random-lite0" --quiet ;;
    probe) train bt-probe-128 bt_linear_probe_128 --init "$out/bt-pretrain-96" ;;
    finetune) train bt-finetune-128 bt_finetune_128 --init "$out/bt-pretrain-96" ;;
    joint) train joint-bt-ce-128 joint_bt_ce_128 ;;
    imagenet)
      train imagenet-ce ../lite0 --holdout 0.1  # the plain fine-tune at the same budget (4 epochs x 1 view)
      train imagenet-joint imagenet_joint_bt_ce ;;
    # Barlow Twins continued from ImageNet (1 epoch x 2 views), then the fine-tune for 2 epochs: 4 image-passes a
    # photo, as imagenet-ce
    imagenet-bt)
      pretrain imagenet-bt-pretrain imagenet_bt_pretrain
      train imagenet-bt-finetune imagenet_bt_finetune --init "$out/imagenet-bt-pretrain" ;;
    *) echo "unknown row $row (${all_rows[*]})" >&2; exit 2 ;;
  esac
done
