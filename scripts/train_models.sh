#!/usr/bin/env bash
# Train, evaluate and calibrate the committed models (default: lite2, then lite0, which is distilled
# from lite2 and the frozen lite0 1.2.0 in training/teachers/, and so needs lite2 first). Idempotent and
# resumable: run it again after a crash or Ctrl-C; each model continues from its last finished epoch, and
# finished steps are skipped.
#   WOOF_DATA_ROOT=../shared/data/imagewoof2-160 scripts/train_models.sh [lite2] [lite0]
set -euo pipefail
cd "$(dirname "$0")/.."
export WOOF_DATA_ROOT="${WOOF_DATA_ROOT:-../shared/data/imagewoof2-160}"
woof=".venv/bin/woof"
has() {  # has CARD KEY: the card has a non-empty KEY
  .venv/bin/python -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1])).get(sys.argv[2]) else 1)' "$1" "$2" \
    2>/dev/null
}
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(lite2 lite0)
declare -A recipe=([lite0]=lite0_distill_ensemble [lite2]=lite2)  # lite0 1.0.0: lite0.yaml, 1.1.0: lite0_distill.yaml, 1.2.0: lite0_distill_long.yaml
for name in "${models[@]}"; do
  out="training/checkpoints/$name"
  if ! has "$out/card.json" metrics; then
    if [ -f "$out/last.pt" ]; then
      $woof train --out "$out" --resume --quiet
    else
      $woof train --config "training/configs/${recipe[$name]:-$name}.yaml" --out "$out" --name "$name" --quiet
    fi
    $woof eval "$out" --baseline --update-card --quiet
  fi
  has "$out/card.json" open_set || $woof calibrate "$out" --quiet
  echo "== $name: trained, evaluated and calibrated ($out/card.json)"
done
