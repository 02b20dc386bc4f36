#!/usr/bin/env bash
# The install step of the Docker image (Dockerfile: RUN scripts/docker-install.sh), runnable outside
# Docker too: tests/test_docker.py runs it into a clean folder and then starts scripts/entrypoint.sh.
#
# Puts everything the serving stack needs into one folder, $WOOF_HOME (default /opt/woof):
#   $WOOF_HOME/app    the code (woof/ training/ handlers/ gateway/ bot/ scripts/), config.properties and
#                     model_store/*.mar, copied from this checkout (no trained weights, no data)
#   $WOOF_HOME/venv   a virtual environment: torch, then woof with its gateway, handlers and bot parts
#   $WOOF_HOME/logs   TorchServe's log folder (LOG_LOCATION; the entrypoint also copies them to stdout)
#   $WOOF_HOME/state  the gateway's shared state (default model, A/B split), the bot's chat settings and
#                     torchserve/, TorchServe's working folder (its key_file.json; entrypoint.sh)
# Only logs/ and state/ need to be writable at run time (the Dockerfile gives them to the user woof).
# Java 17+ (TorchServe) is a system package: installed with apt-get when missing and we are root.
#
# Settings (environment):
#   WOOF_HOME         target folder (default /opt/woof); must not hold an earlier install
#   PYTHON            interpreter for the venv (default python3; 3.10+)
#   WOOF_TORCH        torch requirement or wheel file (default torch==2.14.1)
#   TORCH_INDEX_URL   extra package index for torch, e.g. https://download.pytorch.org/whl/cpu
#                     (the Dockerfile's default: the CPU-only build, ~5x smaller than the CUDA one)
#   WOOF_PIP_ARGS     more pip options for both pip steps (e.g. --find-links DIR)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
home=${WOOF_HOME:-/opt/woof}
python=${PYTHON:-python3}
torch_req=${WOOF_TORCH:-torch==2.14.1}
read -r -a pip_args <<< "${WOOF_PIP_ARGS:-}"
say() { echo "docker-install: $*"; }

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  say "woof needs Python 3.10 or newer (set PYTHON)" >&2
  exit 1
fi
if [ -e "$home/venv" ] || [ -e "$home/app" ]; then
  say "$home already holds an install; use an empty folder" >&2
  exit 1
fi

# Java 17+ for TorchServe.
java_major() {
  java -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print (v[1] == 1 ? v[2] : v[1]); exit}'
}
major=$(java_major || true)
if [ -z "$major" ] || [ "$major" -lt 17 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing openjdk-17-jre-headless"
    apt-get update -q
    mkdir -p /usr/share/man/man1  # slim images drop it; the JRE's update-alternatives links into it
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openjdk-17-jre-headless
    rm -rf /var/lib/apt/lists/*
  else
    say "TorchServe needs Java 17+ (found: ${major:-none}); install openjdk-17-jre-headless" >&2
    exit 1
  fi
fi

# The code, the TorchServe config and the archives.
mkdir -p "$home/app" "$home/logs" "$home/state"
cp "$src/pyproject.toml" "$src/README.md" "$src/config.properties" "$home/app/"
for package in woof training handlers gateway bot scripts; do
  # Python sources and the package's data (web page, configs, example photos); no trained weights:
  # the archives in model_store/ carry the models.
  (cd "$src" && find "$package" \( -path "$package/checkpoints" -o -path "$package/teachers" \) -prune \
     -o -name __pycache__ -prune \
     -o -type f ! -name '*.pyc' -print0) |
    (cd "$src" && xargs -0 cp --parents -t "$home/app")
done
mkdir -p "$home/app/model_store"
# woof's default log folder is app/logs (LOG_LOCATION, set by the entrypoint, wins): the writable logs/.
ln -s ../logs "$home/app/logs"
shopt -s nullglob
archives=("$src"/model_store/*.mar)
if [ ${#archives[@]} -eq 0 ]; then
  say "no archives in $src/model_store (the default one is lite0-int8.mar)" >&2
  exit 1
fi
cp "${archives[@]}" "$home/app/model_store/"
say "copied the code and ${#archives[@]} archive(s): $(cd "$home/app/model_store" && echo *.mar)"

# The virtual environment: torch first (from TORCH_INDEX_URL when given), then woof.
"$python" -m venv "$home/venv"
pip=("$home/venv/bin/pip" install --no-cache-dir --disable-pip-version-check -q "${pip_args[@]}")
torch_index=()
[ -n "${TORCH_INDEX_URL:-}" ] && torch_index=(--extra-index-url "$TORCH_INDEX_URL")
say "installing $torch_req ${TORCH_INDEX_URL:+from $TORCH_INDEX_URL}"
"${pip[@]}" "${torch_index[@]}" "$torch_req"
say "installing woof (gateway, handlers, bot)"
# Editable: woof finds config.properties and model_store/ beside its code in $WOOF_HOME/app.
"${pip[@]}" -e "$home/app[gateway,handlers,bot]"
"$home/venv/bin/woof" --version
say "done: $(du -sh "$home" | cut -f1) in $home"
