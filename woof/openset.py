"""The open-set answer, one rule for every place a prediction is made (`woof predict`, the TorchServe handler).

A softmax over the 10 breeds always names one of them, for a labrador or a cat too. The ImageNet head kept
beside the breed head knows 1000 classes, among them 118 dog breeds and 12 wild canids (151-280), so it can
tell a dog of another breed from one of ours, and name it:

    dog probability  = ImageNet probability mass on classes 151-280
    our share        = the mass on our 10 breeds' ImageNet rows / the dog probability
    breed energy     = logsumexp of the breed head's 10 logits (how strongly the breed head answers at all)

    dog probability >= dog_threshold, our share >= share_threshold
      and breed energy >= energy_threshold                -> "breed" (one of the 10: the top_k ranking)
    otherwise, turned away: dog probability
      >= other_dog_threshold                              -> "other_dog", naming the likeliest other dog class
                                                             when its probability reaches name_threshold
      <  other_dog_threshold                              -> "not_dog"

Two questions, two thresholds on the dog probability: dog_threshold is one of the three gates of "one of the 10"
(chosen with the others to keep 98 % of breed photos), other_dog_threshold only says what a photo that was turned
away is ("a dog of another breed" or "not a dog"). With one threshold for both, a calibration that leans on the
energy gate drove it to ~0.005 and every turned-away cat was told it was "a dog of another breed".
The energy test and other_dog_threshold are optional: cards calibrated before them have neither, and then
dog_threshold answers both questions, as it used to. The energy test turns away the other-breed dogs that the
ImageNet head files under one of our breeds but the fine-tuned breed head does not recognise
(reports/openset_signals.md).

The thresholds come from `woof calibrate`, per export format (INT8 moves the scores), on photos the model never
trained on; they travel in the card. This file is numpy only and self-contained: every archive ships a copy of
it beside the handler.
"""

from __future__ import annotations

from typing import Any

import numpy as np

RULE = "imagenet_dog_share"
DOG_CLASSES = (151, 280)  # inclusive: ImageNet's domestic dogs, then wolves, dingo, foxes and other wild canids
ANSWERS = ("breed", "other_dog", "not_dog")
THRESHOLDS = ("dog_threshold", "share_threshold", "name_threshold")  # probabilities, in [0, 1]
ENERGY = "energy_threshold"  # optional
OTHER_DOG = "other_dog_threshold"  # optional: what a turned-away photo is; dog_threshold when absent
# ImageNet-1k classes 151-280, the first name of each (timm's ImageNetInfo descriptions)
DOG_CLASS_NAMES: tuple[str, ...] = (
    'Chihuahua', 'Japanese spaniel', 'Maltese dog', 'Pekinese', 'Shih-Tzu', 'Blenheim spaniel', 'papillon',
    'toy terrier', 'Rhodesian ridgeback', 'Afghan hound', 'basset', 'beagle', 'bloodhound', 'bluetick',
    'black-and-tan coonhound', 'Walker hound', 'English foxhound', 'redbone', 'borzoi', 'Irish wolfhound',
    'Italian greyhound', 'whippet', 'Ibizan hound', 'Norwegian elkhound', 'otterhound', 'Saluki',
    'Scottish deerhound', 'Weimaraner', 'Staffordshire bullterrier', 'American Staffordshire terrier',
    'Bedlington terrier', 'Border terrier', 'Kerry blue terrier', 'Irish terrier', 'Norfolk terrier',
    'Norwich terrier', 'Yorkshire terrier', 'wire-haired fox terrier', 'Lakeland terrier', 'Sealyham terrier',
    'Airedale', 'cairn', 'Australian terrier', 'Dandie Dinmont', 'Boston bull', 'miniature schnauzer',
    'giant schnauzer', 'standard schnauzer', 'Scotch terrier', 'Tibetan terrier', 'silky terrier',
    'soft-coated wheaten terrier', 'West Highland white terrier', 'Lhasa', 'flat-coated retriever',
    'curly-coated retriever', 'golden retriever', 'Labrador retriever', 'Chesapeake Bay retriever',
    'German short-haired pointer', 'vizsla', 'English setter', 'Irish setter', 'Gordon setter', 'Brittany spaniel',
    'clumber', 'English springer', 'Welsh springer spaniel', 'cocker spaniel', 'Sussex spaniel',
    'Irish water spaniel', 'kuvasz', 'schipperke', 'groenendael', 'malinois', 'briard', 'kelpie', 'komondor',
    'Old English sheepdog', 'Shetland sheepdog', 'collie', 'Border collie', 'Bouvier des Flandres', 'Rottweiler',
    'German shepherd', 'Doberman', 'miniature pinscher', 'Greater Swiss Mountain dog', 'Bernese mountain dog',
    'Appenzeller', 'EntleBucher', 'boxer', 'bull mastiff', 'Tibetan mastiff', 'French bulldog', 'Great Dane',
    'Saint Bernard', 'Eskimo dog', 'malamute', 'Siberian husky', 'dalmatian', 'affenpinscher', 'basenji', 'pug',
    'Leonberg', 'Newfoundland', 'Great Pyrenees', 'Samoyed', 'Pomeranian', 'chow', 'keeshond', 'Brabancon griffon',
    'Pembroke', 'Cardigan', 'toy poodle', 'miniature poodle', 'standard poodle', 'Mexican hairless', 'timber wolf',
    'white wolf', 'red wolf', 'coyote', 'dingo', 'dhole', 'African hunting dog', 'hyena', 'red fox', 'kit fox',
    'Arctic fox', 'grey fox',
)


class RuleError(ValueError):
    """A card's open_set section is missing something or out of range; the message says what."""


def check_rule(rule: dict[str, Any] | None, where: str = "open_set") -> dict[str, Any]:
    if not isinstance(rule, dict) or rule.get("rule") != RULE:
        found = rule.get("rule") if isinstance(rule, dict) else rule
        raise RuleError(f"{where}: expected an open-set rule {RULE!r} (from woof calibrate), found {found!r}")
    for key in THRESHOLDS + ((OTHER_DOG,) if OTHER_DOG in rule else ()):
        value = rule.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
            raise RuleError(f"{where}: {key} must be a number in [0, 1], not {value!r}")
    energy = rule.get(ENERGY, 0.0)  # a logit-scale value, not a probability: any finite number
    if not isinstance(energy, (int, float)) or isinstance(energy, bool) or not np.isfinite(energy):
        raise RuleError(f"{where}: {ENERGY} must be a finite number (a breed-logit logsumexp), not {energy!r}")
    rows = rule.get("breed_imagenet_classes")
    if not (isinstance(rows, list) and rows and all(isinstance(r, int) and 0 <= r < 1000 for r in rows)):
        raise RuleError(f"{where}: breed_imagenet_classes must list the 10 breeds' ImageNet rows")
    return rule


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _logsumexp(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    top = z.max(axis=1)
    return top + np.log(np.exp(z - top[:, None]).sum(axis=1))


def scores(imagenet_logits: np.ndarray, breed_rows: list[int],
           breed_logits: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per image: dog probability, our share of it, the likeliest dog class that is not one of ours, and (given
    the breed logits) the breed energy."""
    p = _softmax(np.atleast_2d(imagenet_logits))
    lo, hi = DOG_CLASSES
    dog = p[:, lo:hi + 1].sum(axis=1)
    ours = p[:, breed_rows].sum(axis=1)
    others = p[:, lo:hi + 1].copy()
    others[:, [r - lo for r in breed_rows]] = 0
    best = others.argmax(axis=1)
    out = {"dog": dog, "share": ours / np.maximum(dog, 1e-12), "other_class": best + lo,
           "other_probability": others[np.arange(len(p)), best]}
    if breed_logits is not None:
        out["energy"] = _logsumexp(np.atleast_2d(breed_logits))
    return out


def other_dog_threshold(rule: dict[str, Any]) -> float:
    """The dog probability at which a turned-away photo is "other_dog" (cards before it: dog_threshold)."""
    return rule.get(OTHER_DOG, rule["dog_threshold"])


def decide(s: dict[str, np.ndarray], rule: dict[str, Any]) -> np.ndarray:
    """The answer per image (an array of ANSWERS strings) from `scores`."""
    dog = s["dog"] >= rule["dog_threshold"]
    ours = s["share"] >= rule["share_threshold"]
    if ENERGY in rule:
        if "energy" not in s:
            raise RuleError(f"the rule has an {ENERGY}: the scores need the breed logits")
        ours &= s["energy"] >= rule[ENERGY]
    is_dog = s["dog"] >= other_dog_threshold(rule)
    return np.where(dog & ours, "breed", np.where(is_dog, "other_dog", "not_dog"))


def answers(imagenet_logits: np.ndarray, rule: dict[str, Any],
            breed_logits: np.ndarray | None = None) -> list[dict[str, Any]]:
    """The open-set fields of a prediction, per image: answer, other_breed, is_known_breed, dog_probability."""
    s = scores(imagenet_logits, rule["breed_imagenet_classes"], breed_logits)
    out = []
    for i, answer in enumerate(decide(s, rule)):
        other = None
        if answer == "other_dog" and s["other_probability"][i] >= rule["name_threshold"]:
            cls = int(s["other_class"][i])
            other = {"name": DOG_CLASS_NAMES[cls - DOG_CLASSES[0]], "imagenet_class": cls,
                     "probability": round(float(s["other_probability"][i]), 4)}
        out.append({"answer": str(answer), "other_breed": other, "is_known_breed": bool(answer == "breed"),
                    "dog_probability": round(float(s["dog"][i]), 4)})
    return out
