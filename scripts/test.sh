#!/usr/bin/env bash
# The test command: lint, the layout contracts (pyproject.toml, docs/architecture.md), then the whole suite
# (needs the Imagewoof data at ../shared/data/imagewoof2-160, or WOOF_TEST_DATA pointing elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/lint-imports --no-cache
.venv/bin/python -m pytest "$@"
