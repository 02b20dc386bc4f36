"""`woof predict`: classify photos with a trained model (the committed default unless told)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from woof.card import open_set_rule
from woof.errors import WoofError
from woof.openset import RULE, answers
from woof.preprocess import ImageError, preprocess, softmax, top_k

from .checkpoint import load_model

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
DEFAULT_MODEL = "lite0"


def default_model_dir() -> Path:
    return Path(os.environ.get("WOOF_MODEL_DIR") or CHECKPOINTS / DEFAULT_MODEL)


class Predictor:
    """A loaded model plus its card; `predict(files)` gives one result object per file."""

    def __init__(self, model_dir: str | os.PathLike | None = None):
        self.model, self.card = load_model(model_dir or default_model_dir())
        self.spec = self.card["preprocessing"]
        # PyTorch computes what the fp32 archives compute: the fp32 calibration. A card calibrated for the
        # old one-threshold rule counts as not calibrated.
        calibrated = (self.card.get("open_set") or {}).get("rule") == RULE
        self.open_set = open_set_rule(self.card, "fp32") if calibrated else None
        if self.open_set and self.model.imagenet_head is None:
            raise WoofError(f"{model_dir}: the card has an open-set rule but the weights have no ImageNet head")

    def predict_one(self, source, k: int = 3) -> dict[str, Any]:
        import torch

        x = torch.from_numpy(preprocess(source, self.spec))[None]
        with torch.inference_mode():
            if self.open_set:
                logits, imagenet_logits = (t[0].numpy() for t in self.model.forward_both(x))
            else:
                logits, imagenet_logits = self.model(x)[0].numpy(), None
        result = {"model": self.card["name"], "model_version": self.card["version"],
                  "top_k": top_k(softmax(logits), self.card["classes"], k)}
        if imagenet_logits is not None:  # the open-set answer, as the TorchServe handler gives it
            result.update(answers(imagenet_logits[None], self.open_set, logits[None])[0])
        else:  # a model without calibration: the fields exist, the answer is unknown
            result.update({"answer": None, "other_breed": None, "is_known_breed": None, "dog_probability": None})
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
    answer, other = result.get("answer"), result.get("other_breed")
    if answer == "other_dog":
        lines.append(f"  looks like a {other['name']} ({other['probability']:.0%}), not one of the 10 breeds woof knows"
                     if other else "  a dog, but probably not one of the 10 breeds woof knows")
        lines.append("  closest of the 10:")
    elif answer == "not_dog":
        lines.append("  probably not a dog; closest of the 10 breeds:")
    elif answer is None:
        lines.append("  (open-set answer not calibrated for this model: woof calibrate MODEL_DIR)")
    for p in result["top_k"]:
        lines.append(f"  {p['probability']:6.1%}  {p['breed']} ({p['wnid']})")
    return "\n".join(lines)
