#!/usr/bin/env bash
# Recalibrate the served models' open-set answer, rebuild their archives and regenerate the open-set report,
# one heavy step at a time (the figures in reports/openset.md and the cards come from this):
#   1. woof calibrate each model (fp32 and onnx-int8) on the 320 px hold-out, the same photos at 160 px and
#      the open-set calibration photos;
#   2. woof archive lite0-int8 and lite2-int8 (INT8 scored on both val copies, the calibration carried inside);
#   3. scripts/openset_report.py for both archives -> reports/openset.md and .csv.
#   DATA_320=data/imagewoof2-320 DATA_160=../shared/data/imagewoof2-160 scripts/openset_refresh.sh
set -euo pipefail
cd "$(dirname "$0")/.."
data320="${DATA_320:-data/imagewoof2-320}"
data160="${DATA_160:-../shared/data/imagewoof2-160}"
woof=".venv/bin/woof"
for name in lite0 lite2; do
  $woof calibrate "training/checkpoints/$name" --data "$data320" --also "$data160" --quiet
done
$woof archive lite0-int8 lite2-int8 --data "$data320" --also "$data160"
.venv/bin/python scripts/openset_report.py --models lite0-int8,lite2-int8 --data "$data320" --also "$data160"
