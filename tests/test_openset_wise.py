"""The open-set answer (rule, calibration on real photos) and WiSE-FT weight mixing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.checkpoint import load_model
from training.openset import (
    REPORT_DOG_SOURCE,
    calibrate,
    choose_other_dog_threshold,
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

ROOT = Path(__file__).resolve().parents[1]


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


def test_a_turned_away_photo_is_a_dog_or_not_by_its_own_threshold():
    logits = np.full((3, 1000), -20.0)
    logits[0, [281, 254]] = [20.0, 19.3]  # mostly a tabby cat, some pug: dog probability 0.33
    logits[1, [254, 281]] = [20.0, 19.3]  # mostly a pug: 0.67
    logits[2, 273] = 20.0  # dingo, one of ours, but the breed head is flat and weak
    breed = np.array([[0.5] * 10] * 3)
    dog = scores(logits, list(IMAGENET_ROWS), breed)["dog"]
    assert np.allclose(dog[:2], [1 / (1 + np.exp(0.7)), 1 / (1 + np.exp(-0.7))])
    # the old cards: dog_threshold answers both questions; a low one makes the cat "a dog of another breed"
    low_gate = rule(dog_threshold=0.01, energy_threshold=5.0)
    assert [o["answer"] for o in answers(logits, low_gate, breed)] == ["other_dog", "other_dog", "other_dog"]
    # other_dog_threshold says what a turned-away photo is, and only that: the gate to "breed" is unchanged
    split = {**low_gate, "other_dog_threshold": 0.5}
    assert [o["answer"] for o in answers(logits, split, breed)] == ["not_dog", "other_dog", "other_dog"]
    assert answers(logits[2:], {**split, "energy_threshold": 2.0}, breed[2:])[0]["answer"] == "breed"
    assert answers(logits[1:2], {**split, "other_dog_threshold": 0.7}, breed[1:2])[0]["answer"] == "not_dog"
    for bad in (-0.1, 1.5, "half", True):
        with pytest.raises(RuleError, match=r"other_dog_threshold must be a number in \[0, 1\]"):
            check_rule(rule(other_dog_threshold=bad))


def test_other_dog_threshold_separates_dogs_from_cats_by_balanced_accuracy():
    dogs = np.array([0.9, 0.8, 0.7, 0.45, 0.95])
    cats = np.array([0.05, 0.1, 0.3, 0.2, 0.4, 0.02, 0.5])
    # 0.42 and 0.44 get every dog and every cat but the 0.5 one (1 + 6/7); above 0.5: 4/5 + 1; the tie: nearest 0.5
    assert choose_other_dog_threshold(dogs, cats) == 0.44
    assert choose_other_dog_threshold(np.array([0.9, 0.95]), np.array([0.1, 0.3])) == 0.5  # tie: 0.32-0.90
    assert choose_other_dog_threshold(np.array([0.35, 0.4]), np.array([0.05, 0.1])) == 0.34
    assert choose_other_dog_threshold(np.array([]), cats) == 0.5


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
    assert np.isfinite(fp32["energy_threshold"]) and 0 < fp32["other_dog_threshold"] < 1
    # answered other_dog is a part of turned away
    assert 0 <= fp32["other_dogs_answered_other_dog"] <= fp32["other_dogs_rejected"]
    assert 0 <= fp32["non_dogs_answered_not_dog"] <= fp32["non_dogs_rejected"]
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


@pytest.mark.parametrize("archive", sorted((ROOT / "model_store").glob("*.mar")), ids=lambda p: p.stem)
def test_committed_archives_carry_todays_rule_and_their_models_calibration(archive):
    """An archive ships its own copy of woof/openset.py and its format's thresholds: both must be today's, or the
    served answer is not the one the code, the card and reports/openset.md describe."""
    import json
    import zipfile

    with zipfile.ZipFile(archive) as z:
        shipped_rule_code = z.read("openset.py").decode()
        card = json.loads(z.read("card.json"))
    assert shipped_rule_code == (ROOT / "woof" / "openset.py").read_text(), f"{archive.name}: rebuild it"
    rule = check_rule(card["open_set"], archive.name)
    fmt = rule["calibrated_for"]
    model_card = read_card(ROOT / "training" / "checkpoints" / card["name"])
    calibrated = model_card["open_set"]["formats"][fmt]
    assert model_card["version"] == card["version"]
    assert {k: rule[k] for k in calibrated} == calibrated
    assert "other_dog_threshold" in rule  # calibrated by today's woof calibrate
