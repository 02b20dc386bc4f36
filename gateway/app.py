"""The app factory: settings, the TorchServe client, shared state, limits, metrics, blueprints."""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from types import SimpleNamespace

from flask import Flask, g, request

from . import metrics
from .config import Settings
from .errors import register_error_handlers
from .limits import RateLimiter
from .state import StateFile
from .torchserve import CardCache, KnownModels, TorchServe

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def create_app(config: dict | None = None) -> Flask:
    settings = Settings.load(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes  # werkzeug answers 413 past it
    app.config["MAX_FORM_MEMORY_SIZE"] = settings.max_upload_bytes
    app.config["WOOF"] = settings
    app.json.sort_keys = False
    app.extensions["woof"] = SimpleNamespace(
        settings=settings,
        torchserve=TorchServe(settings.torchserve_url, settings.torchserve_mgmt_url, settings.connect_timeout,
                              settings.read_timeout, settings.admin_timeout, pool_size=max(8, settings.max_inflight),
                              key_file=settings.torchserve_key_file),
        state=StateFile(settings.state_dir),
        cards=CardCache(settings.model_store),
        limiter=RateLimiter(settings.rate_limit, settings.rate_burst),
        inflight=threading.BoundedSemaphore(settings.max_inflight),
    )
    x = app.extensions["woof"]
    x.known_models = KnownModels(x.torchserve)
    if not logging.getLogger("gateway").handlers:
        logging.getLogger("gateway").setLevel(logging.INFO)

    @app.before_request
    def start():
        g.start = time.perf_counter()
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = incoming if REQUEST_ID.match(incoming) else uuid.uuid4().hex
        g.model, g.error_code = "-", None

    @app.after_request
    def finish(response):
        response.headers["X-Request-Id"] = g.get("request_id", "-")
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"  # bounded label values
        model = g.get("model", "-")
        metrics.REQUESTS.labels(endpoint, model, str(response.status_code)).inc()
        metrics.LATENCY.labels(endpoint, model).observe(time.perf_counter() - g.get("start", time.perf_counter()))
        if response.status_code >= 400:
            metrics.ERRORS.labels(endpoint, model, g.get("error_code") or "http_error").inc()
        return response

    register_error_handlers(app)
    from .admin import bp as admin_bp
    from .api import bp as api_bp
    from .web import bp as web_bp

    app.register_blueprint(api_bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(web_bp)
    return app
