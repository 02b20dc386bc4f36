#!/usr/bin/env python
"""The original brief's way, as a benchmark baseline (not a product path): one Flask process, eager PyTorch.

It loads the committed fp32 model the fair way: the same trained model the default archive is built from
(training/checkpoints/lite0, through training/checkpoint.py `load_model`), the project's one preprocessing
definition (woof/preprocess.py `preprocess`, as the TorchServe handler and `woof predict` use it: EXIF
orientation, draft-mode JPEG decoding, resize + centre crop), `torch.inference_mode()`, `--threads` intra-op
threads (default 2), channels_last weights and inputs (a little faster for EfficientNet-Lite on x86 CPUs),
and the same work per request as the handler: both heads and the open-set answer when the card is
calibrated. Not handicapped either on the HTTP side: werkzeug's threaded server with HTTP/1.1 keep-alive,
no per-request log lines; the model call itself is serialised by a lock (N request threads each running
a multi-threaded forward pass on 2 cores only oversubscribe them), decoding and preprocessing overlap.

    POST /predict[?top_k=3]   the image as the raw body (image/*, octet-stream) or multipart field `file`
                              -> 200 {"model", "model_version", "top_k": [{"breed", "wnid", "probability"}],
                                      "answer", "other_breed", "is_known_breed", "dog_probability", "latency_ms"}
                              -> 4xx {"error": {"code", "message"}} (422 invalid_image for a non-image)
    GET  /healthz             200 {"status": "ok"} once the model is loaded and warmed up

    .venv/bin/python scripts/brief_baseline.py --port 8090 [--model-dir training/checkpoints/lite0] [--threads 2]
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_MODEL_DIR = REPO / "training" / "checkpoints" / "lite0"
MAX_UPLOAD = 16 * 1024 * 1024  # as TorchServe's max_request_size


class BaselineModel:
    """The trained fp32 model in eager PyTorch, answering one image's bytes with the top-k JSON."""

    def __init__(self, model_dir: str | Path, threads: int = 2, channels_last: bool = True):
        import torch

        from training.checkpoint import load_model
        from woof.card import open_set_rule
        from woof.openset import RULE

        torch.set_num_threads(threads)
        self.torch, self.channels_last = torch, channels_last
        self.model, self.card = load_model(model_dir)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.spec = self.card["preprocessing"]
        # the open-set answer the handler gives, with the fp32 calibration (as `woof predict` does)
        calibrated = (self.card.get("open_set") or {}).get("rule") == RULE
        self.open_set = open_set_rule(self.card, "fp32") if calibrated and self.model.imagenet_head is not None \
            else None
        self.lock = threading.Lock()
        size = self.spec["input_size"]
        for _ in range(3):  # warm-up before /healthz says ok
            self._forward(torch.zeros(1, 3, size, size))

    def _forward(self, x):
        torch = self.torch
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.lock, torch.inference_mode():
            if self.open_set:
                breed, imagenet = self.model.forward_both(x)
                return breed[0].numpy(), imagenet[0].numpy()
            return self.model(x)[0].numpy(), None

    def predict(self, data: bytes, k: int = 3) -> dict:
        from woof.openset import answers
        from woof.preprocess import preprocess, softmax, top_k

        x = self.torch.from_numpy(preprocess(data, self.spec))[None]  # ImageError for a non-image
        logits, imagenet = self._forward(x)
        result = {"model": self.card["name"], "model_version": self.card["version"],
                  "top_k": top_k(softmax(logits.astype("float64")), self.card["classes"], k)}
        if imagenet is not None:
            result.update(answers(imagenet[None], self.open_set, logits[None])[0])
        else:
            result.update({"answer": None, "other_breed": None, "is_known_breed": None, "dog_probability": None})
        return result


def create_app(model: BaselineModel):
    from flask import Flask, jsonify, request

    from woof.preprocess import ImageError

    app = Flask("brief_baseline")
    app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD

    def error(status: int, code: str, message: str):
        response = jsonify({"error": {"code": code, "message": message}})
        response.status_code = status
        return response

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok", "model": model.card["name"]})

    @app.post("/predict")
    def predict():
        start = time.perf_counter()
        raw = request.args.get("top_k", "3")
        if not raw.isdigit() or not 1 <= int(raw) <= len(model.card["classes"]):
            return error(400, "bad_request", f"top_k must be an integer from 1 to {len(model.card['classes'])}")
        if request.mimetype == "multipart/form-data":
            upload = request.files.get("file")
            data = upload.read() if upload is not None else b""
        else:
            data = request.get_data(cache=False)
        if not data:
            return error(400, "no_file", "no image: send it as the raw body or the multipart field `file`")
        try:
            result = model.predict(data, int(raw))
        except ImageError as e:
            return error(422, "invalid_image", str(e))
        result["latency_ms"] = round((time.perf_counter() - start) * 1000, 2)
        return jsonify(result)

    @app.errorhandler(413)
    def too_large(e):
        return error(413, "payload_too_large", f"the upload is over {MAX_UPLOAD // 2**20} MB")

    @app.errorhandler(404)
    def not_found(e):
        return error(404, "not_found", "POST /predict or GET /healthz")

    @app.errorhandler(405)
    def not_allowed(e):
        return error(405, "method_not_allowed", "POST /predict or GET /healthz")

    return app


def serve(app, host: str, port: int) -> None:
    from werkzeug.serving import WSGIRequestHandler, make_server

    class KeepAlive(WSGIRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the load generators reuse their connections

        def log_request(self, *args, **kwargs):  # no per-request log line (the gateway keeps a file log)
            pass

    server = make_server(host, port, app, threaded=True, request_handler=KeepAlive)
    print(f"brief baseline: http://{host}:{server.port} ready (POST /predict)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    p.add_argument("--port", type=int, default=8090, help="port (default: %(default)s; 0 = any free one)")
    p.add_argument("--model-dir", default=str(DEFAULT_MODEL_DIR), help="trained model folder (card.json + "
                                                                       "model.safetensors; default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default: %(default)s)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="keep the default NCHW memory format")
    args = p.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    started = time.perf_counter()
    model = BaselineModel(args.model_dir, args.threads, args.channels_last)
    print(f"brief baseline: {model.card['name']} {model.card['version']} (fp32, eager PyTorch, {args.threads} "
          f"threads, {'channels_last' if args.channels_last else 'NCHW'}) loaded in "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    serve(create_app(model), args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
