"""Model cards (`card.json`) and model checkpoints (`model.safetensors` beside the card).

A card travels with every model (and later inside every TorchServe archive): what the model is,
how to feed it, which classes it outputs in which order, how it was trained and how well it does.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

from woof.breeds import classes
from woof.errors import WoofError
from woof.files import atomic_write_json
from woof.openset import RuleError, check_rule
from woof.preprocess import check_spec

SCHEMA_VERSION = 1
CARD_FILE = "card.json"
WEIGHTS_FILE = "model.safetensors"
REQUIRED = ("schema_version", "name", "version", "architecture", "classes", "preprocessing")



def new_card(name: str, architecture: str, preprocessing: dict[str, Any], **fields: Any) -> dict[str, Any]:
    card = {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "version": "1.0.0",
        "architecture": architecture,
        "classes": classes(),
        "preprocessing": check_spec(dict(preprocessing)),
    }
    card.update(fields)
    return card


def bump_minor(version: str) -> str:
    """1.3.0 -> 1.4.0 (a retrained model: new weights, same interface)."""
    try:
        major, minor, *_ = (int(part) for part in version.split("."))
    except ValueError:
        raise WoofError(f"card version {version!r} is not MAJOR.MINOR.PATCH") from None
    return f"{major}.{minor + 1}.0"


def trained_on(card: dict[str, Any]) -> str:
    """The Imagewoof copy a model trained on; cards before 1.4.0 said only "imagewoof2": all were the 160 px set."""
    data = card.get("data") or {}
    return data.get("dataset", "imagewoof2") if "shorter_side" in data else "imagewoof2-160"


def version_summary(card: dict[str, Any]) -> dict[str, Any]:
    """What a card's `previous_versions` keeps of a model it replaced (written by code, never by hand)."""
    metrics = card.get("metrics") or {}
    teachers = card.get("recipe", {}).get("teacher")
    training = card.get("training") or {}
    summary = {
        "version": card["version"],
        "recipe": card.get("command") or "",
        "data": trained_on(card),
        "val_set": metrics.get("val_set", "imagewoof2-160"),  # cards before 1.4.0 were scored on 160 px
        "training": f"{training.get('epochs', '?')} epochs, {training.get('seconds', 0) / 60:.0f} min",
    }
    if teachers:
        summary["teachers"] = teachers if isinstance(teachers, list) else [teachers]
    for key in ("val", "val_imagenet_val_subset", "top5", "other_val_sets"):
        if key in metrics:
            summary[key] = metrics[key]
    return summary


def succeed(card: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """Make `card` the next version of `old`: bumped version, `old` first in previous_versions."""
    card["version"] = bump_minor(old.get("version", "1.0.0"))
    history = [version_summary(old)] if old.get("metrics") else []
    card["previous_versions"] = history + list(old.get("previous_versions", []))
    return card


def validate_card(card: dict[str, Any], where: str = "card.json") -> dict[str, Any]:
    missing = [k for k in REQUIRED if k not in card]
    if missing:
        raise WoofError(f"{where} is missing {', '.join(missing)}")
    if card["schema_version"] > SCHEMA_VERSION:
        raise WoofError(f"{where} uses card schema {card['schema_version']}; this woof reads up to {SCHEMA_VERSION}")
    if [c["wnid"] for c in card["classes"]] != [c["wnid"] for c in classes()]:
        raise WoofError(f"{where}: classes are not the 10 Imagewoof wnids in sorted order")
    try:
        check_spec(card["preprocessing"])
    except ValueError as e:
        raise WoofError(f"{where}: {e}") from None
    return card


def read_card(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / CARD_FILE
    try:
        card = json.loads(path.read_text())
    except FileNotFoundError:
        raise WoofError(f"no model card at {path}") from None
    except json.JSONDecodeError as e:
        raise WoofError(f"{path} is not valid JSON ({e})") from None
    return validate_card(card, str(path))



def write_card(directory: str | os.PathLike, card: dict[str, Any]) -> Path:
    path = Path(directory) / CARD_FILE
    atomic_write_json(path, validate_card(card))
    return path


def archive_card(path: Path) -> dict[str, Any] | None:
    """The card inside a .mar, or None if the file is missing or unreadable."""
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read(CARD_FILE))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def calibration_key(fmt: str) -> str:
    """The open-set calibration a format uses: INT8 its own; PyTorch, TorchScript and ONNX the fp32 one."""
    return "onnx-int8" if fmt == "onnx-int8" else "fp32"


def open_set_rule(card: dict[str, Any], fmt: str, where: str = "card.json") -> dict[str, Any]:
    """The open-set rule for `fmt` (shared settings + that format's thresholds), checked; WoofError if missing."""
    section = card.get("open_set") or {}
    key = calibration_key(fmt)
    if key not in (section.get("formats") or {}):
        raise WoofError(f"{where} has no open-set calibration for {key} (the answers breed / other_dog / not_dog "
                        f"need it): run woof calibrate MODEL_DIR --format {key}")
    rule = {k: v for k, v in section.items() if k not in ("formats", "calibration_data")}
    rule.update(section["formats"][key])
    rule["calibrated_for"] = key
    try:
        return check_rule(rule, f"{where} open_set ({key})")
    except RuleError as e:
        raise WoofError(str(e)) from None


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()



