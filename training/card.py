"""Model cards (`card.json`) and model checkpoints (`model.safetensors` beside the card).

A card travels with every model (and later inside every TorchServe archive): what the model is,
how to feed it, which classes it outputs in which order, how it was trained and how well it does.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

from .breeds import classes
from .errors import WoofError
from .preprocess import check_spec

SCHEMA_VERSION = 1
CARD_FILE = "card.json"
WEIGHTS_FILE = "model.safetensors"
REQUIRED = ("schema_version", "name", "version", "architecture", "classes", "preprocessing")


def hardware() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if torch.cuda.is_available():
        desc += f", GPU {torch.cuda.get_device_name(0)}"
    return desc


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


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes files private; reports and cards are meant to be read
    os.replace(tmp, path)


def write_card(directory: str | os.PathLike, card: dict[str, Any]) -> Path:
    path = Path(directory) / CARD_FILE
    atomic_write_text(path, json.dumps(validate_card(card), indent=2) + "\n")
    return path


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_weights(model, directory: str | os.PathLike) -> tuple[Path, str]:
    """Save the model's tensors as safetensors (atomically); returns the path and its sha256."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / WEIGHTS_FILE
    tmp = directory / f".{WEIGHTS_FILE}.tmp"
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path, file_sha256(path)


def load_model(directory: str | os.PathLike):
    """A trained model from its folder (card.json + model.safetensors), in eval mode, and its card."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .models import create_model

    directory = Path(directory)
    card = read_card(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise WoofError(f"no weights at {weights}")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise WoofError(f"{weights} is corrupt or unreadable ({e})") from None
    model = create_model(card["architecture"], pretrained="none",
                         imagenet_head="imagenet_head.weight" in state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WoofError(f"{weights} does not match {card['architecture']} "
                        f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)")
    return model.eval(), card
