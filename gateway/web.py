"""The web page at `/` (placeholder until the web-page issue lands)."""

from flask import Blueprint

bp = Blueprint("web", __name__)


@bp.get("/")
def index():
    return "woof gateway: POST an image to /predict", 200, {"Content-Type": "text/plain; charset=utf-8"}
