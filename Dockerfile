# syntax=docker/dockerfile:1
# woof in one image: TorchServe (with a Java 17 runtime) + the archives in model_store/ + the Flask
# gateway (web page and API) + the Telegram bot.
#
#   docker build -t woof .                                    # CPU-only torch (the default)
#   docker build --build-arg TORCH_INDEX_URL= -t woof .       # torch from PyPI instead (CUDA build, ~5x bigger)
#   docker run --rm -p 8000:8000 woof                         # web page + API on http://localhost:8000
#   docker run --rm --no-healthcheck -e WOOF_TELEGRAM_TOKEN=... -e WOOF_GATEWAY_URL=http://HOST:8000 woof bot
#   docker compose up --build                                 # both services: docker-compose.yml
#
# Ports: 8000 is the gateway (web page, /predict, /models, /healthz, /readyz, /metrics, /admin/...),
# bound to 0.0.0.0 inside the container and the only port to publish. TorchServe's ports (8080
# inference, 8081 management, 8082 metrics, 7070/7071 gRPC) listen on 127.0.0.1 inside the container
# only and are never to be published. Its token authorisation is on (config.properties): TorchServe runs
# in /opt/woof/state/torchserve (WOOF_TORCHSERVE_DIR, set by the entrypoint; mode 0700) and writes its
# keys to key_file.json there (mode 0600), which woof serve hands to the gateway.
#
# The install and start steps are scripts/docker-install.sh and scripts/entrypoint.sh, which
# tests/test_docker.py runs outside Docker. Everything lives in /opt/woof: app/ (code, config,
# archives; read-only), venv/, logs/ and state/ (writable by the user woof; state/torchserve is
# TorchServe's working folder). Logs go to stdout.
FROM python:3.11-slim-bookworm

# The torch build: the CPU-only wheels by default. Empty = PyPI's default build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG WOOF_TORCH=torch==2.14.1

ENV WOOF_HOME=/opt/woof \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WOOF_GATEWAY_BIND=0.0.0.0:8000 \
    WOOF_GATEWAY_ACCESS_LOG=-

# The build context is mounted for this one step only (no copy of the sources stays in a layer).
# docker-install.sh installs the Java runtime with apt-get, then the venv and the code into /opt/woof.
RUN --mount=type=bind,source=.,target=/tmp/woof-src \
    /tmp/woof-src/scripts/docker-install.sh \
    && groupadd --system --gid 10001 woof \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /opt/woof/state \
       --shell /usr/sbin/nologin woof \
    && chown -R woof:woof /opt/woof/logs /opt/woof/state

# numeric, so that runAsNonRoot-style checks can verify it is not root
USER 10001:10001
WORKDIR /opt/woof/app
EXPOSE 8000
# /readyz: TorchServe answers and the default model has a READY worker. Loading takes ~30 s.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["/opt/woof/app/scripts/entrypoint.sh", "healthcheck"]
ENTRYPOINT ["/opt/woof/app/scripts/entrypoint.sh"]
CMD ["serve"]
