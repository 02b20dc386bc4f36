"""Weight-space ensembling of the zero-shot and the fine-tuned model (WiSE-FT, Wortsman et al. 2022).

With `head_init: imagenet` and frozen BatchNorm, the fine-tune starts *from* the zero-shot model
(ImageNet backbone, breed head = the ImageNet rows of the 10 breeds) and both share BatchNorm
statistics, so their weights can be mixed: theta = (1 - alpha) * theta_zero_shot + alpha * theta_fine_tuned.
alpha = 1 is the plain fine-tune, alpha = 0 the zero-shot model. The mix costs nothing at
inference (one model) and keeps more of what ImageNet pretraining knew. Choose alpha on the train
hold-out (scripts/ablate_recipe.py does), never on val.
"""

from __future__ import annotations

from pathlib import Path

import torch

from woof import card as cards
from woof.errors import WoofError

from . import checkpoint
from .models import create_model


def zero_shot_state(architecture: str) -> dict[str, torch.Tensor]:
    """The recipe's step-0 weights: ImageNet backbone and head, breed head from the ImageNet rows."""

    model = create_model(architecture, pretrained="imagenet")
    model.init_head_from_imagenet()
    return model.state_dict()


def mix(model, architecture: str, alpha: float, start: dict[str, torch.Tensor] | None = None) -> None:
    """Mix a fine-tuned WoofNet in place with its zero-shot start."""
    if not 0 <= alpha <= 1:
        raise WoofError(f"alpha must be between 0 and 1, not {alpha}")
    start = start or zero_shot_state(architecture)
    state = model.state_dict()
    for key, value in state.items():
        if value.is_floating_point() and "running_" not in key:
            state[key] = (1 - alpha) * start[key] + alpha * value
    model.load_state_dict(state)


def make_wise_model(model_dir: Path, alpha: float, out_dir: Path, version: str | None = None) -> dict:
    """Write a mixed copy of a trained model folder (weights + card) to out_dir (may be model_dir).

    The card keeps the plain fine-tune's provenance and metrics under `wise_ft`.
    """

    model, card = checkpoint.load_model(model_dir)
    recipe = card.get("recipe", {})
    if recipe.get("head_init") != "imagenet" or not recipe.get("freeze_bn"):
        raise WoofError(f"{model_dir} was not trained from the zero-shot start (head_init imagenet, frozen BN); "
                        "its weights cannot be mixed with it")
    mix(model, card["architecture"], alpha)
    _, sha = checkpoint.save_weights(model, out_dir)
    if Path(out_dir).resolve() != Path(model_dir).resolve():  # the mix keeps its run's recipe and history
        import shutil

        for name in ("history.csv", "config.yaml"):
            if (Path(model_dir) / name).is_file():
                shutil.copy2(Path(model_dir) / name, Path(out_dir) / name)
    card = {**card, "name": out_dir.name, "weights_sha256": sha, "metrics": {},
            "version": version or card["version"],
            "wise_ft": {"alpha": alpha, "source": card["name"], "source_version": card["version"],
                        "source_sha256": card.get("weights_sha256"), "source_metrics": card.get("metrics", {})}}
    cards.write_card(out_dir, card)
    return card
