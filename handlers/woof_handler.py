"""TorchServe handler for every woof archive (TorchScript `.pt`, ONNX `.onnx`, INT8 ONNX).

The archive ships `card.json` (classes, preprocessing, this format's open-set calibration) and the shared
`preprocess.py` and `openset.py` as extra files. BaseHandler loads the serialized file: `.pt` -> torch.jit
module, `.onnx` -> onnxruntime InferenceSession. Either returns (breed_logits, imagenet_logits) for an
N x 3 x S x S batch.

Request: the raw image bytes as the body (or a multipart field `data`; a base64 string is accepted too).
Response per image: {"model", "model_version", "top_k": all 10 breeds by probability,
"answer": "breed" | "other_dog" | "not_dog", "other_breed": {"name", "imagenet_class", "probability"} | null,
"is_known_breed" (answer == "breed"), "dog_probability"}. A bad image gets HTTP 422 and
{"error": {"code": "invalid_image", "message": ...}} without failing the rest of its batch.
"""

import base64
import binascii
import json
import logging
import os

import numpy as np
from ts.torch_handler.base_handler import BaseHandler

try:  # inside the archive: the sibling files shipped with --extra-files
    from openset import answers, check_rule
    from preprocess import ImageError, preprocess, softmax, top_k
except ImportError:  # tests and the repository: the same modules in their package
    from woof.openset import answers, check_rule
    from woof.preprocess import ImageError, preprocess, softmax, top_k

logger = logging.getLogger(__name__)


class WoofHandler(BaseHandler):
    def initialize(self, context):
        model_dir = context.system_properties.get("model_dir")
        with open(os.path.join(model_dir, "card.json")) as f:
            self.card = json.load(f)
        self.spec = self.card["preprocessing"]
        # the archive's own calibration (woof archive refuses to build one without): no silent default
        self.open_set = check_rule(self.card.get("open_set"), f"{self.card['name']} card.json open_set")
        # One intra-op thread per worker by default: with one worker per model, two loaded models
        # never fight over a 2-core machine (torch with 2 OpenMP threads next to another busy process
        # on 2 cores ran ~100x slower here).
        # WOOF_THREADS=2 suits a single model on an otherwise idle machine.
        self.threads = int(os.environ.get("WOOF_THREADS", 1))
        import torch

        torch.set_num_threads(self.threads)
        super().initialize(context)
        if hasattr(self.model, "get_session_options"):  # onnxruntime: BaseHandler uses every core
            self._limit_onnx_threads()
        size = self.spec["input_size"]
        for _ in range(2):  # warm-up (TorchScript optimises on its first runs): before /ping says Healthy
            self.inference({"batch": np.zeros((1, 3, size, size), np.float32)})
        logger.info("woof model %s %s (%s) ready", self.card["name"], self.card["version"],
                    self.card.get("archive", {}).get("format", "?"))

    def _limit_onnx_threads(self):
        import onnxruntime as ort

        if self.model.get_session_options().intra_op_num_threads == self.threads:
            return
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        self.model = ort.InferenceSession(self.model_pt_path, sess_options=options,
                                          providers=self.model.get_providers())

    # -------------------------------------------------------------- per request
    @staticmethod
    def _payload(row):
        value = (row.get("data") or row.get("body")) if isinstance(row, dict) else row
        if isinstance(value, dict):  # a JSON body: {"image": "<base64>"}
            value = value.get("image") or value.get("data")
        if isinstance(value, str):
            try:
                value = base64.b64decode(value.split(",", 1)[-1] if value.startswith("data:") else value,
                                         validate=True)
            except (binascii.Error, ValueError):
                raise ImageError("the request body is text, not an image or base64 image data") from None
        if not isinstance(value, (bytes, bytearray)) or not value:
            raise ImageError("the request has no image data")
        return bytes(value)

    def preprocess(self, data):
        errors, good, arrays = {}, [], []
        for i, row in enumerate(data):
            try:
                arrays.append(preprocess(self._payload(row), self.spec))
                good.append(i)
            except ImageError as e:
                errors[i] = str(e)
            except Exception as e:  # noqa: BLE001 - a decoder crash on one file must not fail its batch
                logger.exception("request %d: image decoding failed", i)
                errors[i] = f"the image could not be decoded ({type(e).__name__})"
        batch = np.stack(arrays).astype(np.float32) if arrays else None
        return {"size": len(data), "errors": errors, "good": good, "batch": batch}

    def inference(self, state, *args, **kwargs):
        if state["batch"] is None:
            return {**state, "breed": None, "imagenet": None}
        if hasattr(self.model, "run"):  # onnxruntime
            breed, imagenet = self.model.run(["breed_logits", "imagenet_logits"], {"image": state["batch"]})
        else:
            import torch

            with torch.inference_mode():
                breed, imagenet = (t.cpu().numpy() for t in self.model(torch.from_numpy(state["batch"])))
        return {**state, "breed": breed, "imagenet": imagenet}

    def postprocess(self, state):
        out = [None] * state["size"]
        for i, message in state["errors"].items():
            out[i] = {"error": {"code": "invalid_image", "message": message}}
            if self.context is not None:
                self.context.set_response_status(422, "Unprocessable Entity", i)
        if state["good"]:
            probabilities = softmax(state["breed"].astype(np.float64))
            open_set = answers(state["imagenet"], self.open_set, state["breed"])
            for j, i in enumerate(state["good"]):
                out[i] = {"model": self.card["name"], "model_version": self.card["version"],
                          "top_k": top_k(probabilities[j], self.card["classes"], k=len(self.card["classes"])),
                          **open_set[j]}
        if self.context is not None:
            for i in range(state["size"]):
                self.context.set_response_content_type(i, "application/json")
        return out

    def describe_handle(self):
        keys = ("name", "version", "architecture", "preprocessing", "open_set", "metrics", "archive")
        return {k: self.card[k] for k in keys if k in self.card}
