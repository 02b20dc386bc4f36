"""Open-set calibration on real photos, and WiSE-FT weight mixing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.checkpoint import load_model
from training.openset import calibrate, dog_probability
from training.wise import make_wise_model, mix, zero_shot_state
from woof.card import read_card
from woof.errors import WoofError


def test_dog_probability_sums_the_dog_and_wild_canid_classes():
    logits = np.full((2, 1000), -20.0)
    logits[0, 273] = 20.0  # dingo
    logits[1, 281] = 20.0  # tabby cat
    p = dog_probability(logits)
    assert p[0] > 0.99 and p[1] < 0.01


def test_calibration_accepts_dogs_and_rejects_the_real_non_dog_photos(tiny_model_dir, data_root):
    result = calibrate(tiny_model_dir, data_root, limit_per_class=4, progress=False)
    assert result["rule"] == "imagenet_dog_probability" and 0 < result["threshold"] < 1
    assert result["calibration"]["holdout_acceptance"] >= 0.95
    assert result["val_acceptance"] >= 0.9
    scores = result["non_dog_scores"]
    assert scores["chelsea"] < result["threshold"]  # the cat
    rejected, total = map(int, result["non_dog_rejected"].split("/"))
    assert total == len(scores) and rejected >= total - 1


def test_wise_mix_endpoints_are_the_zero_shot_and_the_fine_tuned_model(tiny_model_dir):
    model, card = load_model(tiny_model_dir)
    fine_tuned = {k: v.clone() for k, v in model.state_dict().items()}
    start = zero_shot_state(card["architecture"])
    mix(model, card["architecture"], 1.0, start)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in fine_tuned.items())
    mix(model, card["architecture"], 0.0, start)
    assert all(torch.allclose(model.state_dict()[k], v) for k, v in start.items())
    with pytest.raises(WoofError, match="alpha"):
        mix(model, card["architecture"], 1.5, start)


def test_wise_model_folder_is_a_loadable_model_with_its_provenance(tiny_model_dir, tmp_path):
    card = make_wise_model(tiny_model_dir, 0.5, tmp_path / "mixed")
    assert card["wise_ft"]["alpha"] == 0.5 and card["metrics"] == {}
    model, saved = load_model(tmp_path / "mixed")
    assert saved == read_card(tmp_path / "mixed") and saved["name"] == "mixed"
    assert model(torch.zeros(1, 3, 112, 112)).shape == (1, 10)
