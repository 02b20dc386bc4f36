"""Gateway settings, read from the environment (names fixed by the gateway issue) or a dict for tests."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ACCESS_LOG_MAX_BYTES = 10 * 1024 * 1024  # the access log file rolls at this size (gunicorn_conf.py) ...
ACCESS_LOG_BACKUPS = 3  # ... keeping this many older copies: a bounded access log


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


@dataclass
class Settings:
    torchserve_url: str = "http://127.0.0.1:8080"  # WOOF_TORCHSERVE_URL
    torchserve_mgmt_url: str = "http://127.0.0.1:8081"  # WOOF_TORCHSERVE_MGMT_URL
    # WOOF_TORCHSERVE_KEY_FILE: TorchServe's key_file.json (token authorisation), in the directory TorchServe
    # runs in; woof serve sets it. Default: the repository root, where `woof serve` runs it from a checkout.
    # Read again when it changes; a key is renewed through <mgmt>/token when due or refused. No file: no keys.
    torchserve_key_file: str = str(REPO / "key_file.json")
    admin_token: str = ""  # WOOF_ADMIN_TOKEN; empty = admin endpoints off
    default_model: str = "lite0-int8"  # WOOF_DEFAULT_MODEL (until an admin sets another)
    max_upload_mb: float = 10.0  # WOOF_MAX_UPLOAD_MB
    model_store: str = str(REPO / "model_store")  # WOOF_MODEL_STORE: the archives TorchServe loads from
    state_dir: str = str(REPO / "logs" / "gateway")  # WOOF_STATE_DIR: default model + A/B split, shared
    connect_timeout: float = 2.0  # WOOF_CONNECT_TIMEOUT (s)
    read_timeout: float = 30.0  # WOOF_READ_TIMEOUT (s): one prediction
    admin_timeout: float = 300.0  # WOOF_ADMIN_TIMEOUT (s): registering/scaling loads models
    max_inflight: int = 4  # WOOF_MAX_INFLIGHT: concurrent TorchServe calls per gateway process (< its threads)
    queue_timeout: float = 5.0  # WOOF_QUEUE_TIMEOUT (s) to wait for a slot before 503
    rate_limit: float = 20.0  # WOOF_RATE_LIMIT: requests/s per client (0 = off)
    rate_burst: int = 40  # WOOF_RATE_BURST

    ENV = {
        "torchserve_url": "WOOF_TORCHSERVE_URL", "torchserve_mgmt_url": "WOOF_TORCHSERVE_MGMT_URL",
        "torchserve_key_file": "WOOF_TORCHSERVE_KEY_FILE",
        "admin_token": "WOOF_ADMIN_TOKEN", "default_model": "WOOF_DEFAULT_MODEL",
        "max_upload_mb": "WOOF_MAX_UPLOAD_MB", "model_store": "WOOF_MODEL_STORE", "state_dir": "WOOF_STATE_DIR",
        "connect_timeout": "WOOF_CONNECT_TIMEOUT", "read_timeout": "WOOF_READ_TIMEOUT",
        "admin_timeout": "WOOF_ADMIN_TIMEOUT", "max_inflight": "WOOF_MAX_INFLIGHT",
        "queue_timeout": "WOOF_QUEUE_TIMEOUT", "rate_limit": "WOOF_RATE_LIMIT", "rate_burst": "WOOF_RATE_BURST",
    }

    @classmethod
    def load(cls, overrides: dict | None = None) -> Settings:
        """Defaults, then the environment, then `overrides` (keys are the field names)."""
        values = {}
        for f in fields(cls):
            kind = type(f.default)
            raw = _env(cls.ENV[f.name], str(f.default))
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise ValueError(f"{cls.ENV[f.name]}={raw!r} is not a valid {kind.__name__}") from None
        unknown = set(overrides or {}) - set(values)
        if unknown:
            raise ValueError(f"unknown gateway settings: {', '.join(sorted(unknown))}")
        values.update(overrides or {})
        settings = cls(**values)
        settings.torchserve_url = settings.torchserve_url.rstrip("/")
        settings.torchserve_mgmt_url = settings.torchserve_mgmt_url.rstrip("/")
        return settings

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
