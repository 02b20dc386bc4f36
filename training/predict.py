"""`woof predict`: classify photos with a trained model (the committed default unless told)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from woof.preprocess import ImageError, preprocess, softmax, top_k

from .checkpoint import load_model
from .openset import dog_probability

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
DEFAULT_MODEL = "lite0"


def default_model_dir() -> Path:
    return Path(os.environ.get("WOOF_MODEL_DIR") or CHECKPOINTS / DEFAULT_MODEL)


class Predictor:
    """A loaded model plus its card; `predict(files)` gives one result object per file."""

    def __init__(self, model_dir: str | os.PathLike | None = None):
        self.model, self.card = load_model(model_dir or default_model_dir())
        self.spec = self.card["preprocessing"]

    def predict_one(self, source, k: int = 3) -> dict[str, Any]:
        import torch

        x = torch.from_numpy(preprocess(source, self.spec))[None]
        open_set = self.card.get("open_set")
        with torch.inference_mode():
            if open_set and self.model.imagenet_head is not None:
                logits, imagenet_logits = (t[0].numpy() for t in self.model.forward_both(x))
            else:
                logits, imagenet_logits = self.model(x)[0].numpy(), None
        result = {"model": self.card["name"], "model_version": self.card["version"],
                  "top_k": top_k(softmax(logits), self.card["classes"], k)}
        if imagenet_logits is not None:  # the open-set check, as the TorchServe handler does it

            dog = float(dog_probability(imagenet_logits[None])[0])
            result["is_known_breed"] = dog >= open_set["threshold"]
            result["dog_probability"] = round(dog, 4)
        return result

    def predict(self, files: list[str], k: int = 3) -> list[dict[str, Any]]:
        results = []
        for f in files:
            try:
                results.append({"file": str(f), **self.predict_one(f, k)})
            except ImageError as e:
                results.append({"file": str(f), "error": str(e)})
        return results


def format_result(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"{result['file']}: error: {result['error']}"
    lines = [f"{result['file']}:"]
    if result.get("is_known_breed") is False:
        lines.append("  probably not one of the 10 breeds (or not a dog); closest guesses:")
    for p in result["top_k"]:
        lines.append(f"  {p['probability']:6.1%}  {p['breed']} ({p['wnid']})")
    return "\n".join(lines)
