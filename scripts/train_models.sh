#!/usr/bin/env bash
# Train and evaluate the committed models (default: lite0, then lite2). Resumable: run it again
# after a crash or Ctrl-C and each model continues from its last finished epoch.
#   WOOF_DATA_ROOT=../shared/data/imagewoof2-160 scripts/train_models.sh [lite0] [lite2]
set -euo pipefail
cd "$(dirname "$0")/.."
export WOOF_DATA_ROOT="${WOOF_DATA_ROOT:-../shared/data/imagewoof2-160}"
woof=".venv/bin/woof"
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(lite0 lite2)
for name in "${models[@]}"; do
  out="training/checkpoints/$name"
  if grep -q '"metrics"' "$out/card.json" 2>/dev/null; then
    echo "== $name: already trained and evaluated ($out/card.json)"
    continue
  fi
  if [ -f "$out/last.pt" ]; then
    $woof train --out "$out" --resume --quiet
  else
    $woof train --config "training/configs/$name.yaml" --out "$out" --name "$name" --quiet
  fi
  $woof eval "$out" --baseline --update-card --quiet
done
