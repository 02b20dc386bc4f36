#!/usr/bin/env bash
# Train, choose, evaluate and calibrate the committed models under the 320 px protocol (docs/training.md):
#   1. train each recipe on the fixed 90 % of the 320 px train split (runs/NAME-320; resumable: rerun after a
#      crash or Ctrl-C and it continues from the last finished epoch);
#   2. score it and its weight mixes with the zero-shot start on the 10 % hold-out at 320 and 160 px
#      (scripts/select_320.py -> reports/selection_320.md), and take the row the fixed rule picks;
#   3. woof promote it into training/checkpoints/NAME (next version, the old one kept in previous_versions);
#   4. woof eval on the 320 px val (primary) and the 160 px val, with the zero-shot row and McNemar test;
#   5. woof calibrate (open-set thresholds on the hold-out at 320 and 160 px and the open-set calibration photos).
#   DATA_320=data/imagewoof2-320 DATA_160=../shared/data/imagewoof2-160 scripts/train_models.sh [NAME[:RECIPE] ...]
# NAME is the checkpoint folder (training/checkpoints/NAME), RECIPE a file in training/configs/ without .yaml;
# the default is the recipes that shipped: lite0:lite0_320_sharp_teacher lite2:lite2_320.
# Get the data first: woof data fetch --size 320 (and --size 160), then woof data verify --expect 320.
set -euo pipefail
cd "$(dirname "$0")/.."
data320="${DATA_320:-data/imagewoof2-320}"
data160="${DATA_160:-../shared/data/imagewoof2-160}"
alphas="${WISE_ALPHAS:-0.3,0.5,0.7,0.9}"
woof=".venv/bin/woof"
py=".venv/bin/python"
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(lite0:lite0_320_sharp_teacher lite2:lite2_320)
for entry in "${models[@]}"; do
  name="${entry%%:*}"
  recipe="${entry#*:}"
  [ "$recipe" != "$entry" ] || recipe="${name}_320"
  [ -f "training/configs/$recipe.yaml" ] || { echo "== no recipe training/configs/$recipe.yaml" >&2; exit 2; }
  run="runs/$name-320"
  if [ ! -f "$run/model.safetensors" ]; then
    if [ -f "$run/last.pt" ]; then
      $woof train --out "$run" --data "$data320" --resume --quiet
    else
      $woof train --config "training/configs/$recipe.yaml" --data "$data320" --out "$run" --name "$name" --quiet
    fi
  fi
  $py scripts/select_320.py "$run" --wise "$alphas" --data "$data320" --also "$data160"
  chosen=$($py -c 'import sys; sys.path.insert(0, "scripts"); import select_320 as s
print(s.choose(s.read_rows()).get(sys.argv[1], ""))' "$(.venv/bin/python -c 'import json, sys
print(json.load(open(sys.argv[1]))["architecture"])' "$run/card.json")")
  case "$chosen" in
    "") echo "== $name: no row reached zero-shot at both sizes on the hold-out; nothing promoted" >&2; exit 1 ;;
    "$name-320") source="$run" ;;
    "$name-320_wise_"*) source="$run-wise"; $woof wise "$run" --alpha "${chosen##*_wise_}" --out "$source" ;;
    *) echo "== $name: the chosen row $chosen is not from $run; promote it by hand" >&2; exit 1 ;;
  esac
  out="training/checkpoints/$name"
  $woof promote "$source" --to "$out"
  $woof eval "$out" --data "$data320" --also "$data160" --baseline --update-card --quiet
  $woof calibrate "$out" --data "$data320" --also "$data160" --quiet
  echo "== $name: $chosen promoted, evaluated and calibrated ($out/card.json)"
done
