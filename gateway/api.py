"""Public endpoints: /predict, /models, /healthz, /readyz, /metrics, /openapi.json."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, g, jsonify, request

from . import metrics
from .errors import ApiError
from .limits import retry_after
from .openapi import spec
from .state import choose_model
from .torchserve import card_fields, metric_label, ready_workers, valid_name

bp = Blueprint("api", __name__)

RAW_TYPES = ("application/octet-stream",)


def ext():
    return current_app.extensions["woof"]


def client_id() -> str:
    """Who the rate limit and the A/B split see: the X-Client-Id header, else the peer address."""
    return (request.headers.get("X-Client-Id") or "").strip()[:200] or f"ip:{request.remote_addr}"


def _image_type(mimetype: str) -> bool:
    return mimetype.startswith("image/") or mimetype in RAW_TYPES


def read_image() -> bytes:
    """The uploaded image: multipart field `file`, or the raw body sent as image/* or octet-stream."""
    mimetype = request.mimetype or ""
    if mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise ApiError(400, "no_file", "no image: send it as the multipart field `file` (or as the raw body)")
        if upload.mimetype and not _image_type(upload.mimetype):
            raise ApiError(415, "unsupported_media_type",
                           f"the file is {upload.mimetype}; send a photo (image/jpeg, image/png, ...)")
        data = upload.read()
    elif _image_type(mimetype):
        data = request.get_data(cache=False)
        # a chunked body has no Content-Length for werkzeug to refuse up front: it stops reading at the
        # limit and returns what it has, which must not be mistaken for a whole (truncated) image
        if request.content_length is None and len(data) >= current_app.config["MAX_CONTENT_LENGTH"]:
            raise ApiError(413, "payload_too_large", f"the upload is over the limit of "
                                                     f"{ext().settings.max_upload_mb:g} MB")
    elif not mimetype and not request.content_length:
        data = b""
    else:
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Type {mimetype} is not accepted: send multipart/form-data with a `file` field, "
                       "or the image bytes as image/* or application/octet-stream")
    if not data:
        raise ApiError(400, "no_file", "the image is empty: send a photo as the multipart field `file` "
                                       "or as the raw body")
    return data


def top_k_param() -> int:
    raw = request.args.get("top_k", "3")
    try:
        k = int(raw)
    except ValueError:
        k = 0
    if not 1 <= k <= 10:
        raise ApiError(400, "bad_request", f"top_k must be an integer from 1 to 10, not {raw!r}")
    return k


@bp.post("/predict")
def predict():
    x, start = ext(), time.perf_counter()
    wait = x.limiter.check(client_id())
    if wait:
        raise ApiError(429, "rate_limited", "too many requests from this client; slow down",
                       retry_after=retry_after(wait))
    k = top_k_param()
    requested = request.args.get("model")
    if requested is not None:
        if not valid_name(requested):
            raise ApiError(404, "unknown_model", f"unknown model {requested[:100]!r}: GET /models lists them")
        model, route = requested, "requested"
    else:
        model, route = choose_model(x.state.read(), x.settings.default_model, client_id())
    body = read_image()  # before taking a TorchServe slot: a slow upload must not hold one
    if not x.inflight.acquire(timeout=x.settings.queue_timeout):
        raise ApiError(503, "overloaded", "the gateway is at its limit of concurrent predictions; retry shortly",
                       retry_after=1)
    sent = time.perf_counter()
    try:
        # counted before the check below: /admin/unregister marks the model retiring, then waits for this
        # count to reach 0 (TorchServe 0.12 never answers requests still queued for a model it unregisters)
        with metrics.INFLIGHT.labels(metric_label(model, x.known_models)).track_inprogress():
            if model in x.state.read().get("retiring", ()):
                g.model = "unknown"
                raise upstream_error(404, None, model, route)
            response = x.torchserve.predict(model, body, g.request_id)
    finally:
        x.inflight.release()
    g.model = model if response.status_code != 404 else "unknown"
    metrics.UPSTREAM.labels(g.model).observe(time.perf_counter() - sent)
    result = _json(response)
    if response.status_code == 200 and isinstance(result, dict) and "top_k" in result:
        return jsonify({
            "model": model, "model_version": result.get("model_version"), "top_k": result["top_k"][:k],
            "answer": result.get("answer"), "other_breed": result.get("other_breed"),
            "is_known_breed": result.get("is_known_breed"), "dog_probability": result.get("dog_probability"),
            "latency_ms": round((time.perf_counter() - start) * 1000, 2), "route": route,
            "request_id": g.request_id})
    raise upstream_error(response.status_code, result, model, route)


def _json(response):
    try:
        return response.json()
    except ValueError:
        return None


def upstream_error(status: int, result, model: str, route: str) -> ApiError:
    error = (result or {}).get("error") if isinstance(result, dict) else None
    if status == 422:
        message = error.get("message") if isinstance(error, dict) else "the image could not be decoded"
        return ApiError(422, "invalid_image", str(message))
    if status == 404:
        if route == "requested":
            return ApiError(404, "unknown_model", f"model {model!r} is not served: GET /models lists them")
        # the configured default / split names a model TorchServe no longer hosts: our fault, not the client's
        return ApiError(503, "model_unavailable", f"the configured model {model!r} is not served right now",
                        retry_after=5)
    if status == 413:
        return ApiError(413, "payload_too_large", "TorchServe refused the upload as too large")
    if status in (503, 507):
        return ApiError(503, "torchserve_busy", f"TorchServe cannot take the request for {model!r} now "
                                                "(queue full or no worker)", retry_after=1)
    if status == 504:
        return ApiError(504, "torchserve_timeout", "TorchServe timed out on the prediction")
    return ApiError(502, "torchserve_error", f"TorchServe failed on the request (HTTP {status})")


@bp.get("/models")
def models():
    x = ext()
    state = x.state.read()
    default = state.get("default") or x.settings.default_model
    out = []
    for entry in x.torchserve.list_models():
        name = entry.get("modelName")
        versions = x.torchserve.describe(name) or []
        first = versions[0] if versions else {}
        workers = [w for v in versions for w in v.get("workers", [])]
        ready = ready_workers(versions)
        out.append({
            "name": name, "version": first.get("modelVersion"),
            "versions": [v.get("modelVersion") for v in versions],
            "archive": entry.get("modelUrl"), "workers": len(workers), "workers_ready": ready,
            "status": "READY" if ready else (workers[0].get("status", "UNAVAILABLE") if workers else "NO_WORKERS"),
            "default": name == default,
            "card": card_fields(x.cards.card(entry.get("modelUrl") or f"{name}.mar")),
        })
    return jsonify({"default": default, "split": state.get("split"), "models": out})


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    x = ext()
    ping = x.torchserve.ping()
    if ping != "Healthy":
        raise ApiError(503, "not_ready", f"TorchServe is not healthy (/ping: {ping or 'no answer'})", retry_after=5)
    state = x.state.read()
    needed = [state.get("default") or x.settings.default_model]
    if state.get("split"):
        needed += [state["split"]["a"], state["split"]["b"]]
    for name in dict.fromkeys(needed):
        if not ready_workers(x.torchserve.describe(name)):
            raise ApiError(503, "not_ready", f"model {name!r} has no READY worker in TorchServe", retry_after=5)
    return jsonify({"status": "ready", "torchserve": ping, "default": needed[0], "split": state.get("split")})


@bp.get("/metrics")
def prometheus():
    data, content_type = metrics.render()
    return Response(data, content_type=content_type)


@bp.get("/openapi.json")
def openapi():
    return jsonify(spec(current_app.extensions["woof"].settings))
