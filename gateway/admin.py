"""Admin endpoints (Bearer WOOF_ADMIN_TOKEN): register, unregister, scale, default, split.

Models are switched through TorchServe's management API; the default and the A/B split go to the
shared state file so every gunicorn worker routes the same way. Promotion flow: register the new
archive -> POST /admin/split (e.g. 10 % to it) -> POST /admin/default -> roll back by POSTing the
previous default (each answer names it) and DELETE /admin/split.
"""

from __future__ import annotations

import hmac
import time
from pathlib import Path

from flask import Blueprint, current_app, jsonify, request

from . import metrics
from .errors import ApiError
from .torchserve import ready_workers, valid_name

bp = Blueprint("admin", __name__, url_prefix="/admin")
MAX_WORKERS = 8


def ext():
    return current_app.extensions["woof"]


@bp.before_request
def require_token():
    token = ext().settings.admin_token
    if not token:
        raise ApiError(403, "admin_disabled", "admin endpoints are off: WOOF_ADMIN_TOKEN is not set")
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise ApiError(401, "unauthorized", "admin calls need the header Authorization: Bearer <WOOF_ADMIN_TOKEN>")
    if not hmac.compare_digest(header[7:].strip().encode(), token.encode()):
        raise ApiError(403, "forbidden", "the admin token is wrong")


def body() -> dict:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "send a JSON object (Content-Type: application/json)")
    return data


def model_field(data: dict, key: str = "model") -> str:
    name = data.get(key)
    if not isinstance(name, str) or not valid_name(name):
        raise ApiError(400, "bad_request", f"`{key}` must be a model name (letters, digits, _ . -)")
    return name


def int_field(data: dict, key: str, default: int, low: int, high: int) -> int:
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ApiError(400, "bad_request", f"`{key}` must be an integer from {low} to {high}")
    return value


def require_ready(name: str) -> None:
    versions = ext().torchserve.describe(name)
    if versions is None:
        raise ApiError(404, "unknown_model", f"model {name!r} is not registered in TorchServe")
    if not ready_workers(versions):
        raise ApiError(409, "model_not_ready", f"model {name!r} has no READY worker (POST /admin/scale)")


def ts_error(status: int, body, action: str) -> ApiError:
    message = body.get("message", "") if isinstance(body, dict) else str(body)
    if status == 404:
        return ApiError(404, "unknown_model", f"{action}: {message or 'not found'}")
    if status == 409:
        return ApiError(409, "conflict", f"{action}: {message}")
    return ApiError(502, "torchserve_error", f"{action}: TorchServe answered HTTP {status}: {message[:200]}")


@bp.post("/register")
def register():
    data = body()
    archive = data.get("archive")
    if not isinstance(archive, str) or not valid_name(archive):
        raise ApiError(400, "bad_request", "`archive` must be a file name in the model store, e.g. lite0-int8.mar")
    archive = archive if archive.endswith(".mar") else f"{archive}.mar"
    name = model_field(data) if "model" in data else archive[:-4]
    workers = int_field(data, "workers", 1, 1, MAX_WORKERS)
    if not (Path(ext().settings.model_store) / archive).is_file():
        raise ApiError(404, "unknown_archive", f"{archive} is not in the model store")
    start = time.perf_counter()
    status, answer = ext().torchserve.mgmt(
        "POST", "/models", timeout=ext().settings.admin_timeout,
        params={"url": archive, "model_name": name, "initial_workers": workers, "synchronous": "true"})
    if status != 200:
        raise ts_error(status, answer, f"registering {archive}")
    with ext().state.update() as state:  # woof serve re-registers these if TorchServe has to be restarted
        state["registered"] = {**state.get("registered", {}), name: {"archive": archive, "workers": workers}}
    return jsonify({"model": name, "archive": archive, "workers": workers,
                    "seconds": round(time.perf_counter() - start, 2)}), 201


@bp.post("/unregister")
def unregister():
    name = model_field(body())
    state = ext().state.read()
    split = state.get("split") or {}
    if name in ((state.get("default") or ext().settings.default_model), split.get("a"), split.get("b")):
        raise ApiError(409, "model_in_use", f"{name!r} is the default model or in the A/B split: "
                                            "switch those first")
    if ext().torchserve.describe(name) is None:
        raise ApiError(404, "unknown_model", f"model {name!r} is not registered in TorchServe")
    # Drain first: TorchServe 0.12 drops requests still queued for a model it unregisters without ever
    # answering them. Every worker stops sending new ones once the model is marked retiring.
    with ext().state.update() as state:
        state["retiring"] = sorted({*state.get("retiring", []), name})
    try:
        deadline = time.monotonic() + ext().settings.read_timeout
        while metrics.inflight(name) > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        status, answer = ext().torchserve.mgmt("DELETE", f"/models/{name}", timeout=ext().settings.admin_timeout)
    finally:
        with ext().state.update() as state:
            retiring = [m for m in state.get("retiring", []) if m != name]
            if retiring:
                state["retiring"] = retiring
            else:
                state.pop("retiring", None)
    if status != 200:
        raise ts_error(status, answer, f"unregistering {name}")
    with ext().state.update() as state:
        registered = {k: v for k, v in state.get("registered", {}).items() if k != name}
        if registered:
            state["registered"] = registered
        else:
            state.pop("registered", None)
    return jsonify({"model": name, "unregistered": True})


@bp.post("/scale")
def scale():
    data = body()
    name = model_field(data)
    workers = int_field(data, "workers", 1, 1, MAX_WORKERS)
    status, answer = ext().torchserve.mgmt(
        "PUT", f"/models/{name}", timeout=ext().settings.admin_timeout,
        params={"min_worker": workers, "max_worker": workers, "synchronous": "true"})
    if status != 200:
        raise ts_error(status, answer, f"scaling {name}")
    return jsonify({"model": name, "workers": workers})


@bp.post("/default")
def set_default():
    name = model_field(body())
    require_ready(name)
    with ext().state.update() as state:
        previous = state.get("default") or ext().settings.default_model
        state["default"] = name
    return jsonify({"default": name, "previous": previous})


@bp.post("/split")
def set_split():
    data = body()
    a, b = model_field(data, "a"), model_field(data, "b")
    percent = data.get("b_percent")
    if not isinstance(percent, (int, float)) or isinstance(percent, bool) or not 0 < percent < 100:
        raise ApiError(400, "bad_request", "`b_percent` must be a number between 0 and 100 (exclusive)")
    if a == b:
        raise ApiError(400, "bad_request", "`a` and `b` must be different models")
    require_ready(a)
    require_ready(b)
    split = {"a": a, "b": b, "b_percent": percent}
    with ext().state.update() as state:
        previous = state.get("split")
        state["split"] = split
    return jsonify({"split": split, "previous": previous})


@bp.delete("/split")
def clear_split():
    with ext().state.update() as state:
        previous = state.pop("split", None)
    return jsonify({"split": None, "previous": previous})
