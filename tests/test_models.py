"""Offline ImageNet weights map 1:1 into timm, the ImageNet head is kept and knows the breeds."""

from __future__ import annotations

import pytest
import torch

from training.models import OFFLINE_WEIGHTS, create_model, default_preprocessing, lukemelas_to_timm
from woof.breeds import IMAGENET_INDEX, WNIDS
from woof.errors import WoofError
from woof.preprocess import preprocess

from .conftest import val_images


@pytest.mark.parametrize("name", sorted(OFFLINE_WEIGHTS))
def test_lukemelas_weights_map_to_timm_without_missing_or_unexpected_keys(name):
    import importlib

    import timm

    arch, package, _ = OFFLINE_WEIGHTS[name]
    module = importlib.import_module(package)
    holder = next(getattr(module, a) for a in dir(module) if a.endswith("ModelFile"))
    state = torch.load(holder.get_model_file_path(), map_location="cpu", weights_only=True)
    net = timm.create_model(arch, pretrained=False)
    mapped = lukemelas_to_timm(state, net)
    result = net.load_state_dict(mapped, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert len(mapped) == len(state) == len(net.state_dict())
    for key, value in net.state_dict().items():
        assert value.shape == mapped[key].shape, key


def test_imagenet_rows_match_timm_class_list():
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    for wnid, row in IMAGENET_INDEX.items():
        assert info.index_to_label_name(row) == wnid


def test_lite0_imagenet_head_recognises_real_val_dogs(data_root):
    model = create_model("efficientnet_lite0").eval()
    spec = default_preprocessing("efficientnet_lite0")
    assert spec["mean"] == [0.5, 0.5, 0.5] and spec["std"] == [0.5, 0.5, 0.5]
    images = val_images(data_root, per_class=2)
    x = torch.stack([torch.from_numpy(preprocess(p, spec)) for p, _ in images])
    labels = torch.tensor([WNIDS.index(w) for _, w in images])
    with torch.inference_mode():
        breed_logits, imagenet_logits = model.forward_both(x)
        zero_shot = model.zero_shot(x)
    # Every ImageNet prediction is a dog (classes 151-280 are dogs and wild canids) ...
    top = imagenet_logits.argmax(1)
    assert ((top >= 151) & (top <= 280)).all(), top
    # ... the zero-shot baseline names most breeds right, and the fresh head starts from it.
    assert (zero_shot.argmax(1) == labels).float().mean() >= 0.8
    model.init_head_from_imagenet()
    assert torch.allclose(model(x), zero_shot, atol=1e-5)
    assert breed_logits.shape == (len(images), 10)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(WoofError, match="unknown model 'efficientnet_lite9'"):
        create_model("efficientnet_lite9")


def test_hub_weights_offline_fail_fast_with_the_offline_choices(monkeypatch, tmp_path):
    import time

    import huggingface_hub.constants

    # An endpoint nobody listens on and an empty cache make "offline" true on any machine.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(WoofError) as err:
        create_model("efficientnet_b0", pretrained="imagenet")
    assert time.monotonic() - start < 30
    msg = str(err.value)
    assert "efficientnet_lite0" in msg and "--pretrained none" in msg and "\n" not in msg


def test_scratch_model_has_no_imagenet_head_and_says_so():
    model = create_model("efficientnet_lite0", pretrained="none")
    assert model.imagenet_head is None
    with pytest.raises(WoofError, match="no ImageNet head"):
        model.forward_both(torch.zeros(1, 3, 64, 64))
