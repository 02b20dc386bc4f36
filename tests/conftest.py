"""Shared fixtures: the real Imagewoof data (read-only, from ../shared) and a tiny trained model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("WOOF_TEST_DATA") or ROOT.parent / "shared" / "data" / "imagewoof2-160")


@pytest.fixture(scope="session")
def data_root() -> Path:
    assert (DATA / "train").is_dir(), f"the Imagewoof data must be at {DATA}"
    return DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, data_root) -> Path:
    """Lite0 fine-tuned for one epoch on 6 real images per class at 96 px (seconds on a CPU)."""
    from training.train import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny") / "tiny-lite0"
    config = TrainConfig(epochs=1, batch_size=12, limit_per_class=6, train_size=96, eval_size=112,
                         workers=0, warmup_epochs=0.5)
    train(config, data_root, out, progress=False)
    return out


def val_images(data_root: Path, per_class: int = 1, imagenet_val: bool = True) -> list[tuple[Path, str]]:
    """(path, wnid) of the first real val images of each class."""
    from training.breeds import WNIDS

    out = []
    for wnid in WNIDS:
        files = sorted(p for p in (data_root / "val" / wnid).iterdir()
                       if p.name.startswith("ILSVRC2012_val_") == imagenet_val)
        out += [(p, wnid) for p in files[:per_class]]
    return out
