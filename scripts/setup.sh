#!/usr/bin/env bash
# One-command set-up on a fresh machine: creates .venv in the project root and installs woof
# with every part (training, handlers, gateway, bot, dev tools) into it.
#   scripts/setup.sh
# Set PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu first for the small CPU-only torch.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "setup: woof needs Python 3.10 or newer (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
# torch first, pinned: the versions this project is tested with.
.venv/bin/pip install --disable-pip-version-check -q torch==2.14.1 torchvision==0.29.1
.venv/bin/pip install --disable-pip-version-check -q -e ".[all]"
.venv/bin/woof --version
# TorchServe (woof serve, the archive tests) runs on Java 17 or newer; training does not need it.
java_major=$( (java -version 2>&1 || true) | awk -F'"' '/version/ {split($2, v, "."); print v[1]; exit}')
if [ -z "${java_major:-}" ] || [ "$java_major" -lt 17 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing openjdk-17-jre-headless (TorchServe needs Java 17+, found: ${java_major:-none})"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-17-jre-headless; } ||
      echo "setup: WARNING: apt-get could not install Java 17; woof serve and the TorchServe tests will fail" >&2
  else
    echo "setup: WARNING: TorchServe needs Java 17+ (found: ${java_major:-none})." >&2
    echo "       Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless" >&2
  fi
fi
# The web-page test (tests/test_web.py) drives Debian's chromium + chromium-driver (never a downloaded browser).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing chromium and chromium-driver (for tests/test_web.py)"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; } ||
      echo "setup: WARNING: apt-get could not install chromium; tests/test_web.py will fail" >&2
  else
    echo "setup: note: tests/test_web.py needs /usr/bin/chromium: sudo apt-get install -y chromium chromium-driver" >&2
  fi
fi
# scripts/side_by_side.py loads the servers with Debian's wrk (a C load generator: less client CPU on few
# cores than Python); without it the script falls back to the project's Python client and says so.
if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk ||
      echo "setup: note: apt-get could not install wrk; scripts/side_by_side.py will use its Python client" >&2
  else
    echo "setup: note: scripts/side_by_side.py prefers wrk: sudo apt-get install -y wrk" >&2
  fi
fi
echo "setup: done. Try: .venv/bin/woof predict path/to/dog.jpg"
