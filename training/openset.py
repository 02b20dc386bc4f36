"""Open-set check: is a photo probably one of the 10 breeds at all?

A softmax over 10 breeds always names a breed, cats included. The ImageNet head kept beside the
breed head knows 1000 classes, among them 118 domestic dog breeds (151-268) and the wild canids
(269-280; the dingo, 273, is one of ours). The rule: the ImageNet probability mass on classes
151-280 ("dog probability") must reach a threshold. The threshold is calibrated on the train
hold-out (never on val) to accept a target share of real dog photos, written into the card, and
checked on val (acceptance) and on real non-dog photos that scikit-image ships (rejection).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from woof.preprocess import preprocess, softmax

from .checkpoint import load_model
from .data import holdout_split, list_samples, subset_per_class

DOG_CLASSES = (151, 280)  # inclusive: domestic dogs + wolves, dingo, foxes and other wild canids
RULE = "imagenet_dog_probability"
NON_DOG_PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "camera", "coins", "hubble_deep_field",
                  "immunohistochemistry", "retina")


def dog_probability(imagenet_logits: np.ndarray) -> np.ndarray:
    lo, hi = DOG_CLASSES
    return softmax(imagenet_logits.astype(np.float64))[:, lo: hi + 1].sum(1)


def is_known_breed(imagenet_logits: np.ndarray, open_set: dict[str, Any]) -> np.ndarray:
    return dog_probability(imagenet_logits) >= open_set["threshold"]


def non_dog_images() -> dict[str, Any]:
    """Real non-dog photos from scikit-image (a cat, a person, a cup of coffee, a rocket, ...)."""
    import skimage.data
    from PIL import Image

    out = {}
    for name in NON_DOG_PHOTOS:
        arr = getattr(skimage.data, name)()
        out[name] = Image.fromarray(arr).convert("RGB")
    return out


def imagenet_logits_for(model, sources, spec, batch_size: int = 64) -> np.ndarray:
    """ImageNet logits for samples (paths) or PIL images, through the shared preprocessing."""
    import torch

    outs = []
    with torch.inference_mode():
        for i in range(0, len(sources), batch_size):
            x = torch.stack([torch.from_numpy(preprocess(s, spec)) for s in sources[i: i + batch_size]])
            outs.append(model.forward_both(x.to(memory_format=torch.channels_last))[1].float().numpy())
    return np.concatenate(outs)


def calibrate(model_dir: Path, data_root: Path, target_acceptance: float = 0.975, holdout: float = 0.1,
              seed: int = 0, progress: bool = True, limit_per_class: int | None = None) -> dict[str, Any]:
    """Pick the threshold on the train hold-out; measure val acceptance and non-dog rejection."""
    from tqdm import tqdm

    model, card = load_model(model_dir)
    spec = card["preprocessing"]

    def scores(sources, what):
        chunks = [sources[i: i + 256] for i in range(0, len(sources), 256)]
        logits = [imagenet_logits_for(model, c, spec) for c in tqdm(chunks, desc=what, disable=not progress)]
        return dog_probability(np.concatenate(logits))

    _, held = holdout_split(list_samples(data_root, "train"), holdout, seed)
    val = list_samples(data_root, "val")
    if limit_per_class:  # tests and smoke runs
        held, val = subset_per_class(held, limit_per_class), subset_per_class(val, limit_per_class)
    held_scores = scores([s.path for s in held], "hold-out")
    threshold = float(np.quantile(held_scores, 1 - target_acceptance))
    val_scores = scores([s.path for s in val], "val")
    photos = non_dog_images()
    photo_scores = dog_probability(imagenet_logits_for(model, list(photos.values()), spec))
    rejected = [n for n, p in zip(photos, photo_scores) if p < threshold]
    return {
        "rule": RULE,
        "imagenet_classes": list(DOG_CLASSES),
        "threshold": round(threshold, 4),
        "calibration": {"data": f"train hold-out {holdout:.0%} (stratified, seed {seed}), {len(held)} images",
                        "target_acceptance": target_acceptance,
                        "holdout_acceptance": round(float((held_scores >= threshold).mean()), 4)},
        "val_acceptance": round(float((val_scores >= threshold).mean()), 4),
        "non_dog_rejected": f"{len(rejected)}/{len(photos)}",
        "non_dog_scores": {n: round(float(p), 4) for n, p in zip(photos, photo_scores)},
    }
