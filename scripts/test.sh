#!/usr/bin/env bash
# The test command: lint, then the whole suite (needs the Imagewoof data at ../shared/data/imagewoof2-160,
# or WOOF_TEST_DATA pointing elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
