"""The open-set answer (rule, calibration on real photos) and WiSE-FT weight mixing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.checkpoint import load_model
from training.openset import (
    REPORT_DOG_SOURCE,
    calibrate,
    choose_thresholds,
    openset_photos,
    openset_root,
    openset_split,
)
from training.wise import make_wise_model, mix, zero_shot_state
from woof.breeds import IMAGENET_ROWS
from woof.card import open_set_rule, read_card
from woof.errors import WoofError
from woof.openset import RULE, RuleError, answers, check_rule, scores


def rule(**thresholds):
    return {"rule": RULE, "dog_classes": [151, 280], "breed_imagenet_classes": list(IMAGENET_ROWS),
            "dog_threshold": 0.5, "share_threshold": 0.5, "name_threshold": 0.3, **thresholds}


def test_three_answers_from_the_imagenet_head():
    logits = np.full((4, 1000), -20.0)
    logits[0, 273] = 20.0  # dingo: one of ours
    logits[1, 254] = 20.0  # pug: another breed, named
    logits[2, 281] = 20.0  # tabby cat
    logits[3, [208, 207]] = 20.0  # labrador and golden retriever, half and half: our share 0.5
    out = answers(logits, rule(share_threshold=0.45))
    assert [o["answer"] for o in out] == ["breed", "other_dog", "not_dog", "breed"]
    assert [o["is_known_breed"] for o in out] == [True, False, False, True]
    assert out[1]["other_breed"] == {"name": "pug", "imagenet_class": 254, "probability": 1.0}
    assert out[0]["other_breed"] is None and out[2]["other_breed"] is None
    assert out[0]["dog_probability"] == 1.0 and out[2]["dog_probability"] == 0.0
    assert answers(logits[3:], rule(share_threshold=0.55))[0]["answer"] == "other_dog"
    # a dog of another breed that the ImageNet head cannot name with confidence: other_dog, no name
    spread = np.full((1, 1000), -20.0)
    spread[0, 200:205] = 20.0
    assert answers(spread, rule())[0]["other_breed"] is None and answers(spread, rule())[0]["answer"] == "other_dog"


def test_breed_energy_turns_a_dog_the_breed_head_does_not_recognise_into_other_dog():
    logits = np.full((2, 1000), -20.0)
    logits[:, 273] = 20.0  # the ImageNet head says dingo, one of ours, for both
    breed = np.array([[8.0] + [0.0] * 9, [0.5] * 10])  # the breed head: sure of one; flat and weak
    energies = [8.0 + np.log(1 + 9 * np.exp(-8.0)), 0.5 + np.log(10)]  # logsumexp by hand: 8.0030, 2.8026
    with_energy = rule(energy_threshold=5.0)
    assert [o["answer"] for o in answers(logits, with_energy, breed)] == ["breed", "other_dog"]
    assert [o["answer"] for o in answers(logits, rule(energy_threshold=2.8), breed)] == ["breed", "breed"]
    assert [o["answer"] for o in answers(logits, rule(energy_threshold=2.81), breed)] == ["breed", "other_dog"]
    assert np.allclose(scores(logits, list(IMAGENET_ROWS), breed)["energy"], energies)
    # a cat stays not_dog whatever the breed head says; a card without energy ignores it
    cat = np.full((1, 1000), -20.0)
    cat[0, 281] = 20.0
    assert answers(cat, with_energy, breed[:1])[0]["answer"] == "not_dog"
    assert [o["answer"] for o in answers(logits, rule(), breed)] == ["breed", "breed"]
    with pytest.raises(RuleError, match="need the breed logits"):
        answers(logits, with_energy)


def test_broken_rules_are_one_line_errors():
    with pytest.raises(RuleError, match="expected an open-set rule 'imagenet_dog_share'"):
        check_rule({"rule": "imagenet_dog_probability", "threshold": 0.5})
    with pytest.raises(RuleError, match=r"dog_threshold must be a number in \[0, 1\], not -0.1"):
        check_rule(rule(dog_threshold=-0.1))
    with pytest.raises(RuleError, match="name_threshold must be a number"):
        check_rule(rule(name_threshold="high"))
    with pytest.raises(RuleError, match="breed_imagenet_classes"):
        check_rule(rule(breed_imagenet_classes=[]))
    assert check_rule(rule(energy_threshold=-3.5))["energy_threshold"] == -3.5  # logit scale: any finite number
    for bad in (float("nan"), float("inf"), "5", True):
        with pytest.raises(RuleError, match="energy_threshold must be a finite number"):
            check_rule(rule(energy_threshold=bad))


def test_open_set_photos_split_by_source_and_name_hash():
    photos = openset_photos(openset_root())
    assert len(photos) == 715
    report = [p for p in photos if p.split == "report"]
    assert {p.source for p in report if p.group == "otherdogs"} == {REPORT_DOG_SOURCE}
    assert not {p.source for p in photos if p.group == "otherdogs" and p.split == "calibration"} & {REPORT_DOG_SOURCE}
    for group in ("cats", "nondog"):  # about half of each, by the file name alone
        share = sum(p.split == "report" for p in photos if p.group == group) / sum(p.group == group for p in photos)
        assert 0.3 < share < 0.7
    assert openset_split("cats", "x", "cats/a/same-name.jpg") == openset_split("nondog", "y", "elsewhere/same-name.jpg")
    with pytest.raises(WoofError, match="no open-set photos at"):
        openset_root("/nonexistent")


def test_calibration_keeps_the_target_on_the_hold_out_and_turns_away_open_set_photos(tiny_model_dir, data_root):
    result = calibrate(tiny_model_dir, data_root, [], openset_root(), ["fp32"], target=0.9, limit_per_class=3,
                       progress=False, log=lambda *a: None)
    assert result["rule"] == RULE and result["breed_imagenet_classes"] == list(IMAGENET_ROWS)
    fp32 = result["formats"]["fp32"]
    assert 0 <= fp32["dog_threshold"] <= 1 and 0 <= fp32["share_threshold"] <= 1
    assert np.isfinite(fp32["energy_threshold"])
    assert min(fp32["holdout_acceptance"].values()) >= 0.9
    assert 0 <= fp32["other_dogs_rejected"] <= 1 and fp32["non_dogs_rejected"] >= 0.5
    assert "every source but DiMasta/dogs" in result["calibration_data"]["other_photos"]
    card = read_card(tiny_model_dir)
    rule_fp32 = open_set_rule({**card, "open_set": result}, "torchscript")
    assert rule_fp32["dog_threshold"] == fp32["dog_threshold"] and rule_fp32["calibrated_for"] == "fp32"
    with pytest.raises(WoofError, match="no open-set calibration for onnx-int8"):
        open_set_rule({**card, "open_set": result}, "onnx-int8")


def test_choose_thresholds_prefers_more_rejection_within_the_acceptance_target():
    rng = np.random.default_rng(0)
    held = {"a": {"dog": rng.uniform(0.6, 1, 200), "share": rng.uniform(0.4, 1, 200), "energy": rng.uniform(4, 9, 200)}}
    # half the other dogs look like ours to the ImageNet head (share) but not to the breed head (energy)
    dogs = {"dog": rng.uniform(0.6, 1, 100), "share": np.r_[rng.uniform(0, 0.45, 50), rng.uniform(0.4, 1, 50)],
            "energy": np.r_[rng.uniform(4, 9, 50), rng.uniform(0, 3.9, 50)]}
    non_dogs = {"dog": rng.uniform(0, 0.62, 100), "share": rng.uniform(0, 1, 100), "energy": rng.uniform(0, 9, 100)}
    chosen = choose_thresholds(held, dogs, non_dogs, target=0.97)
    assert chosen["holdout_acceptance"]["a"] >= 0.97
    assert chosen["share_threshold"] > 0.4 and chosen["dog_threshold"] > 0.6 and chosen["energy_threshold"] > 3.9
    assert chosen["other_dogs_rejected"] > 0.9 and chosen["non_dogs_rejected"] > 0.9


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
