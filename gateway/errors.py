"""JSON errors: every failure answers {"error": {"code", "message"}} (500 without a stack trace)."""

from __future__ import annotations

import logging

from flask import Flask, g, jsonify
from werkzeug.exceptions import HTTPException

logger = logging.getLogger("gateway")

HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
              429: "rate_limited"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


def error_response(status: int, code: str, message: str, retry_after: int | None = None):
    g.error_code = code
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(e: ApiError):
        return error_response(e.status, e.code, e.message, e.retry_after)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        status = e.code or 500
        message = e.description or e.name
        if status == 413:
            message = f"the upload is over the limit of {app.config['WOOF'].max_upload_mb:g} MB"
        response = error_response(status, HTTP_CODES.get(status, "http_error"), message)
        valid = getattr(e, "valid_methods", None)
        if status == 405 and valid:
            response.headers["Allow"] = ", ".join(valid)
        return response

    @app.errorhandler(Exception)
    def internal_error(e: Exception):
        # logged with the traceback for operators; the client gets the request id, never the trace
        logger.exception("unhandled error (request %s)", g.get("request_id", "-"))
        return error_response(500, "internal_error",
                              f"internal error; quote request id {g.get('request_id', '-')} when reporting it")
