"""`woof predict`: classify photos with a trained model (the committed default unless told)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .preprocess import ImageError, preprocess, softmax, top_k

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
DEFAULT_MODEL = "lite0"


def default_model_dir() -> Path:
    return Path(os.environ.get("WOOF_MODEL_DIR") or CHECKPOINTS / DEFAULT_MODEL)


class Predictor:
    """A loaded model plus its card; `predict(files)` gives one result object per file."""

    def __init__(self, model_dir: str | os.PathLike | None = None):
        from .card import load_model

        self.model, self.card = load_model(model_dir or default_model_dir())
        self.spec = self.card["preprocessing"]

    def predict_one(self, source, k: int = 3) -> dict[str, Any]:
        import torch

        x = torch.from_numpy(preprocess(source, self.spec))[None]
        with torch.inference_mode():
            logits = self.model(x)[0].numpy()
        return {"model": self.card["name"], "model_version": self.card["version"],
                "top_k": top_k(softmax(logits), self.card["classes"], k)}

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
    for p in result["top_k"]:
        lines.append(f"  {p['probability']:6.1%}  {p['breed']} ({p['wnid']})")
    return "\n".join(lines)
