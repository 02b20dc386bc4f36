"""A trained model on disk: its weights (`model.safetensors`) beside its card, and the machine it ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from woof.card import WEIGHTS_FILE, file_sha256, read_card
from woof.errors import WoofError
from woof.files import atomic_path


def hardware() -> str:
    import torch

    cpu, vnni = platform.processor() or platform.machine(), ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        for line in info.splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        # INT8 speed and accuracy depend on it (VNNI dot-product instructions): say which kind of CPU this is
        flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
        vnni = ", AVX-512 VNNI" if "avx512_vnni" in flags else ", AVX2 without VNNI" if "avx2" in flags else ""
    except OSError:
        pass
    desc = f"{cpu}{vnni}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if torch.cuda.is_available():
        desc += f", GPU {torch.cuda.get_device_name(0)}"
    return desc



def save_weights(model, directory: str | os.PathLike) -> tuple[Path, str]:
    """Save the model's tensors as safetensors (atomically); returns the path and its sha256."""
    from safetensors.torch import save_file

    path = Path(directory) / WEIGHTS_FILE
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    return path, file_sha256(path)



def load_model(directory: str | os.PathLike):
    """A trained model from its folder (card.json + model.safetensors), in eval mode, and its card."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .models import create_model  # here, not at the top: reading a card or the hardware line needs no torch

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
