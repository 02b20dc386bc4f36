"""The web page at `/`: choose, drop or photograph a dog, see the top-3 breeds.

Everything is served from gateway/static (no CDN, no build step): index.html, app.css, app.js and
icon.svg. The page calls the gateway's own JSON API (`GET /models`, `POST /predict`). The upload
limit shown and checked by the page is the gateway's (Flask's MAX_CONTENT_LENGTH, else
WOOF_MAX_UPLOAD_MB, default 10 MB).
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Blueprint, Response, current_app

STATIC = Path(__file__).resolve().parent / "static"

bp = Blueprint("web", __name__, static_folder="static", static_url_path="/ui")

# The page loads nothing from elsewhere; the browser enforces it.
CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


def upload_limit_bytes() -> int:
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit:
        return int(limit)
    try:
        mb = float(os.environ.get("WOOF_MAX_UPLOAD_MB") or 10)
    except ValueError:
        mb = 10.0
    return int(mb * 1024 * 1024)


@bp.get("/")
def index():
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    html = html.replace("{{MAX_UPLOAD_BYTES}}", str(upload_limit_bytes()))
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.after_request
def _static_headers(response):
    # The assets change with the code: the browser revalidates them (cheap, with ETag / Last-Modified).
    response.headers.setdefault("Cache-Control", "no-cache")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response
