"""The OpenAPI 3 description served at /openapi.json (tests validate live responses against it)."""

from __future__ import annotations

ERROR = {"type": "object", "required": ["error"], "additionalProperties": False, "properties": {
    "error": {"type": "object", "required": ["code", "message"], "additionalProperties": False,
              "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}
NULLABLE_STR = {"type": "string", "nullable": True}
NULLABLE_NUM = {"type": "number", "nullable": True}
BREED = {"type": "object", "required": ["breed", "wnid", "probability"], "properties": {
    "breed": {"type": "string"}, "wnid": {"type": "string", "pattern": "^n[0-9]{8}$"},
    "probability": {"type": "number", "minimum": 0, "maximum": 1}}}
OTHER_BREED = {"type": "object", "nullable": True, "required": ["name", "imagenet_class", "probability"],
               "description": "answer other_dog only: the likeliest dog class of ImageNet's that is not one of the "
                              "10, when the ImageNet head gives it at least the card's name_threshold",
               "properties": {"name": {"type": "string"},
                              "imagenet_class": {"type": "integer", "minimum": 151, "maximum": 280},
                              "probability": {"type": "number", "minimum": 0, "maximum": 1}}}
PREDICTION = {"type": "object", "required": ["model", "model_version", "top_k", "answer", "other_breed",
                                             "is_known_breed", "latency_ms", "route", "request_id"], "properties": {
    "model": {"type": "string", "description": "the archive that answered (chosen by ?model=, the A/B split "
                                               "or the default)"},
    "model_version": {"type": "string"},
    "top_k": {"type": "array", "items": {"$ref": "#/components/schemas/Breed"}, "minItems": 1, "maxItems": 10},
    "answer": {"type": "string", "enum": ["breed", "other_dog", "not_dog"],
               "description": "breed: one of the 10 (top_k names it); other_dog: a dog of another breed; "
                              "not_dog: probably no dog in the photo"},
    "other_breed": OTHER_BREED,
    "is_known_breed": {"type": "boolean", "description": "exactly answer == breed"},
    "dog_probability": {"type": "number", "minimum": 0, "maximum": 1},
    "latency_ms": {"type": "number", "minimum": 0},
    "route": {"type": "string", "enum": ["requested", "default", "split-a", "split-b"]},
    "request_id": {"type": "string"}}}
SPLIT = {"type": "object", "nullable": True, "required": ["a", "b", "b_percent"], "properties": {
    "a": {"type": "string"}, "b": {"type": "string"},
    "b_percent": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "exclusiveMaximum": True,
                  "maximum": 100}}}
CARD = {"type": "object", "properties": {
    "name": NULLABLE_STR, "version": NULLABLE_STR, "architecture": NULLABLE_STR, "format": NULLABLE_STR,
    "input_size": {"type": "integer", "nullable": True}, "val_top1": NULLABLE_NUM,
    "val_imagenet_subset_top1": NULLABLE_NUM, "val_set": NULLABLE_STR}}
MODEL = {"type": "object", "required": ["name", "version", "workers", "status", "default", "card"], "properties": {
    "name": {"type": "string"}, "version": NULLABLE_STR, "versions": {"type": "array", "items": NULLABLE_STR},
    "archive": NULLABLE_STR, "workers": {"type": "integer", "minimum": 0},
    "workers_ready": {"type": "integer", "minimum": 0}, "status": {"type": "string"},
    "default": {"type": "boolean"}, "card": {"$ref": "#/components/schemas/Card"}}}
MODEL_REF = {"$ref": "#/components/schemas/Model"}
MODEL_NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"}


REQUEST_ID_HEADER = {"X-Request-Id": {"required": True, "schema": {"type": "string"},
                                     "description": "the request's id (also sent to TorchServe)"}}
RETRY_AFTER_HEADER = {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1},
                                      "description": "seconds to wait before trying again"}}


def _json(schema: dict | str, description: str, headers: dict | None = None) -> dict:
    if isinstance(schema, str):
        schema = {"$ref": f"#/components/schemas/{schema}"}
    return {"description": description, "headers": {**REQUEST_ID_HEADER, **(headers or {})},
            "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict:
    text = {400: "bad request", 401: "no admin token", 403: "wrong admin token or admin endpoints off",
            404: "unknown model or archive", 405: "method not allowed", 409: "conflict with the current state",
            413: "upload over the limit", 415: "unsupported content type", 422: "the image cannot be decoded",
            429: "rate limited (see Retry-After)", 500: "internal error (no stack trace)",
            502: "TorchServe failed", 503: "TorchServe down, busy or not ready (see Retry-After)",
            504: "TorchServe too slow"}
    return {str(s): _json("Error", text[s], RETRY_AFTER_HEADER if s in (429, 503) else None) for s in statuses}


def _admin(summary: str, request: dict | None, answer: dict, ok: str = "200", extra=()) -> dict:
    op = {"summary": summary, "security": [{"bearer": []}], "tags": ["admin"],
          "responses": {ok: _json(answer, "done"), **_errors(400, 401, 403, 404, 409, 500, 502, 503, 504, *extra)}}
    if request is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": request}}}
    return op


def _obj(required: list[str], **properties) -> dict:
    return {"type": "object", "required": required, "properties": properties}


def spec(settings) -> dict:
    upload = f"{settings.max_upload_mb:g} MB"
    binary = {"type": "string", "format": "binary"}
    return {
        "openapi": "3.0.3",
        "info": {"title": "woof gateway", "version": "1.0.0",
                 "description": "Which of the 10 Imagewoof dog breeds is in this photo? A Flask gateway in front "
                                "of TorchServe. Errors are {\"error\": {\"code\", \"message\"}}; every response "
                                "carries X-Request-Id (sent on to TorchServe)."},
        "servers": [{"url": "/"}],
        "components": {
            "schemas": {"Error": ERROR, "Breed": BREED, "Prediction": PREDICTION, "Split": SPLIT, "Card": CARD,
                        "Model": MODEL},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "WOOF_ADMIN_TOKEN; admin endpoints are off without it"}},
        },
        "paths": {
            "/predict": {"post": {
                "summary": f"Name the breed in one photo (at most {upload})",
                "parameters": [
                    {"name": "model", "in": "query", "required": False, "schema": MODEL_NAME,
                     "description": "archive to use (default: the A/B split if set, else the default model)"},
                    {"name": "top_k", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3}},
                    {"name": "X-Client-Id", "in": "header", "required": False, "schema": {"type": "string"},
                     "description": "stable client id: the A/B split is sticky per id; the rate limit counts per id"},
                    {"name": "X-Request-Id", "in": "header", "required": False,
                     "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$"}},
                ],
                "requestBody": {"required": True, "content": {
                    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                                       "properties": {"file": binary}}},
                    "image/jpeg": {"schema": binary}, "image/png": {"schema": binary},
                    "application/octet-stream": {"schema": binary}}},
                "responses": {"200": _json("Prediction", "the breeds, most probable first"),
                              **_errors(400, 404, 413, 415, 422, 429, 500, 502, 503, 504)},
            }},
            "/models": {"get": {
                "summary": "Models TorchServe hosts, with their card fields, the default and the A/B split",
                "responses": {"200": _json(_obj(["default", "split", "models"], default={"type": "string"},
                                                split={"$ref": "#/components/schemas/Split"},
                                                models={"type": "array", "items": MODEL_REF}),
                                           "hosted models"), **_errors(500, 503, 504)}}},
            "/healthz": {"get": {"summary": "The gateway process is alive",
                                 "responses": {"200": _json(_obj(["status"], status={"type": "string"}), "alive")}}},
            "/readyz": {"get": {"summary": "TorchServe reachable and the default (and split) models ready",
                                "responses": {"200": _json(_obj(["status", "default"], status={"type": "string"},
                                                                torchserve={"type": "string"},
                                                                default={"type": "string"},
                                                                split={"$ref": "#/components/schemas/Split"}),
                                                           "ready"), **_errors(500, 503, 504)}}},
            "/metrics": {"get": {"summary": "Prometheus metrics of all gateway workers",
                                 "responses": {"200": {"description": "text exposition format",
                                                       "headers": REQUEST_ID_HEADER,
                                                       "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document",
                                      "responses": {"200": _json({"type": "object"}, "OpenAPI 3")}}},
            "/admin/register": {"post": _admin(
                "Register an archive of the model store in TorchServe (waits until its workers are up)",
                _obj(["archive"], archive={"type": "string", "example": "lite0-int8.mar"}, model=MODEL_NAME,
                     workers={"type": "integer", "minimum": 1, "maximum": 8, "default": 1}),
                _obj(["model", "archive", "workers"], model={"type": "string"}, archive={"type": "string"},
                     workers={"type": "integer"}, seconds={"type": "number"}), ok="201")},
            "/admin/unregister": {"post": _admin(
                "Unregister a model (not the default, not in the split)", _obj(["model"], model=MODEL_NAME),
                _obj(["model", "unregistered"], model={"type": "string"}, unregistered={"type": "boolean"}))},
            "/admin/scale": {"post": _admin(
                "Set a model's number of workers", _obj(["model", "workers"], model=MODEL_NAME,
                                                        workers={"type": "integer", "minimum": 1, "maximum": 8}),
                _obj(["model", "workers"], model={"type": "string"}, workers={"type": "integer"}))},
            "/admin/default": {"post": _admin(
                "Set the default model (it must have a READY worker); the answer names the previous one, "
                "which is how to roll back", _obj(["model"], model=MODEL_NAME),
                _obj(["default", "previous"], default={"type": "string"}, previous={"type": "string"}))},
            "/admin/split": {
                "post": _admin("Send b_percent % of clients (by a hash of X-Client-Id) to b, the rest to a",
                               _obj(["a", "b", "b_percent"], a=MODEL_NAME, b=MODEL_NAME,
                                    b_percent={"type": "number", "exclusiveMinimum": True, "minimum": 0,
                                               "exclusiveMaximum": True, "maximum": 100}),
                               _obj(["split", "previous"], split={"$ref": "#/components/schemas/Split"},
                                    previous={"$ref": "#/components/schemas/Split"})),
                "delete": _admin("End the A/B split (requests go to the default model again)", None,
                                 _obj(["split", "previous"], split={"$ref": "#/components/schemas/Split"},
                                      previous={"$ref": "#/components/schemas/Split"})),
            },
        },
    }
