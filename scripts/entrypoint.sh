#!/usr/bin/env bash
# The start step of the Docker image (its ENTRYPOINT), runnable outside Docker too: tests/test_docker.py
# runs it from a folder made by scripts/docker-install.sh.
#   entrypoint.sh [serve [ARGS]]   TorchServe (loopback only, config.properties) + the gateway on
#                                  $WOOF_GATEWAY_BIND (default 0.0.0.0:8000): `woof serve ARGS`, in the
#                                  foreground; SIGTERM / Ctrl-C stop both; every log is copied to stdout
#   entrypoint.sh bot [ARGS]       the Telegram bot: `woof bot` (WOOF_TELEGRAM_TOKEN, WOOF_GATEWAY_URL)
#   entrypoint.sh healthcheck      exit 0 when the gateway's /readyz answers 200 (the image's HEALTHCHECK)
#   entrypoint.sh COMMAND ...      anything else, e.g. `woof --help`, `woof predict`, `bash`
set -euo pipefail
app=$(cd "$(dirname "$0")/.." && pwd)
if [ -x "$app/../venv/bin/woof" ]; then  # installed by docker-install.sh: $WOOF_HOME/{app,venv,logs,state}
  home=$(cd "$app/.." && pwd)
  export PATH="$home/venv/bin:$PATH"
  export LOG_LOCATION=${LOG_LOCATION:-$home/logs}
  export WOOF_STATE_DIR=${WOOF_STATE_DIR:-$home/state/gateway}
  export WOOF_BOT_STATE=${WOOF_BOT_STATE:-$home/state/bot-chats.json}
  # TorchServe's working folder, where it writes key_file.json (token authorisation): app/ is read-only
  # for the image's user, so woof serve runs TorchServe here with a copy of the config
  export WOOF_TORCHSERVE_DIR=${WOOF_TORCHSERVE_DIR:-$home/state/torchserve}
elif [ -x "$app/.venv/bin/woof" ]; then  # a checkout set up by scripts/setup.sh
  export PATH="$app/.venv/bin:$PATH"
else
  echo "entrypoint: no woof installation beside $app (run scripts/docker-install.sh)" >&2
  exit 1
fi
export PYTHONUNBUFFERED=1
export WOOF_GATEWAY_BIND=${WOOF_GATEWAY_BIND:-0.0.0.0:8000}
logs=${LOG_LOCATION:-$app/logs}

cmd=${1:-serve}
[ $# -gt 0 ] && shift
case "$cmd" in
  serve)
    mkdir -p "$logs"
    # woof serve writes TorchServe's logs (handlers/log4j2.xml: server, workers' warnings, console), the
    # gateway's log and its access log to files in logs/; follow them onto stdout, where `docker logs`
    # reads them (tail -F follows each file across its rotation).
    tail -q -n 0 -F "$logs/ts_log.log" "$logs/model_log.log" "$logs/launcher.log" "$logs/gateway.log" \
      "$logs/gateway_access.log" 2>/dev/null &
    tailer=$!
    woof serve "$@" &
    server=$!
    # Not exec: bash stays PID 1, hands SIGTERM/SIGINT to woof serve (which stops the gateway, then
    # TorchServe) and waits for it.
    trap 'kill -TERM "$server" 2>/dev/null || true' TERM INT
    set +e
    while :; do
      wait "$server"
      status=$?
      kill -0 "$server" 2>/dev/null || break
    done
    sleep 0.5  # the last log lines
    kill "$tailer" 2>/dev/null
    exit "$status"
    ;;
  bot)
    exec woof bot "$@"
    ;;
  healthcheck)
    exec python - <<'EOF'
import os
import sys
import urllib.request

bind = os.environ.get("WOOF_GATEWAY_BIND", "0.0.0.0:8000")
host, _, port = bind.rpartition(":")
host = host.strip("[]")
host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/readyz"
try:
    with urllib.request.urlopen(url, timeout=8) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as e:  # noqa: BLE001 - any failure means not ready
    print(f"not ready: {url}: {e}")
    sys.exit(1)
EOF
    ;;
  *)
    exec "$cmd" "$@"
    ;;
esac
