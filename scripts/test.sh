#!/usr/bin/env bash
# The test command: lint, the layout contracts (pyproject.toml, docs/architecture.md), then the whole suite
# (needs the Imagewoof data at ../shared/data/imagewoof2-160, or WOOF_TEST_DATA pointing elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/lint-imports --no-cache
# The data the suite reads (tests/conftest.py looks in the same places): one line on how to get it, not a
# wall of fixture errors.
if [ -z "${WOOF_TEST_DATA:-}" ]; then
  for place in ../shared/data/imagewoof2-160 data/imagewoof2-160; do
    [ -d "$place/train" ] && { export WOOF_TEST_DATA=$PWD/$place; break; }
  done
fi
if [ ! -d "${WOOF_TEST_DATA:-/nonexistent}/train" ]; then
  echo "test: no 160 px Imagewoof at \$WOOF_TEST_DATA, ../shared/data/imagewoof2-160 or data/imagewoof2-160; get it with: .venv/bin/woof data fetch --size 160" >&2
  exit 2
fi
openset=${WOOF_OPENSET_ROOT:-../shared/data/openset}
if [ ! -f "$openset/manifest.csv" ]; then
  echo "test: no open-set photos at $openset (manifest.csv); set WOOF_OPENSET_ROOT to a folder of other dogs, cats and scenes with a manifest.csv (docs/serving.md, open set)" >&2
  exit 2
fi
.venv/bin/python -m pytest "$@"
