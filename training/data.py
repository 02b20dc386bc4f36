"""Imagewoof on disk: the official layout, sample lists, noisy labels, hold-out split, datasets.

Layout (as the fast.ai archives unpack): ROOT/train/<wnid>/*.JPEG, ROOT/val/<wnid>/*.JPEG and
ROOT/noisy_imagewoof.csv. The root comes from --data or WOOF_DATA_ROOT.
"""

from __future__ import annotations

import csv
import os
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from woof.breeds import BREEDS, WNIDS
from woof.errors import WoofError
from woof.preprocess import load_image

ENV_DATA_ROOT = "WOOF_DATA_ROOT"
SPLITS = ("train", "val")
EXPECTED_COUNTS = {"train": 9025, "val": 3929}  # the official imagewoof2 split
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
NOISE_LEVELS = (0, 1, 5, 25, 50)
IMAGENET_VAL_PREFIX = "ILSVRC2012_val_"


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int

    @property
    def wnid(self) -> str:
        return WNIDS[self.label]

    @property
    def from_imagenet_val(self) -> bool:
        """True for the val images that come from ImageNet's own val set (not seen in pretraining)."""
        return self.path.name.startswith(IMAGENET_VAL_PREFIX)


def resolve_root(data: str | os.PathLike | None) -> Path:
    value = data or os.environ.get(ENV_DATA_ROOT)
    if not value:
        raise WoofError(f"no data folder: pass --data PATH or set {ENV_DATA_ROOT} "
                        "(get the data with `woof data fetch`)")
    return Path(value).expanduser()


def check_layout(root: Path, splits=SPLITS) -> None:
    """Raise a readable WoofError if root is not an Imagewoof folder."""
    if not root.is_dir():
        raise WoofError(f"data folder {root} does not exist (get the data with `woof data fetch`)")
    for split in splits:
        split_dir = root / split
        if not split_dir.is_dir():
            raise WoofError(f"{root} is not an Imagewoof folder: {split}/ is missing "
                            "(expected train/<wnid>/ and val/<wnid>/)")
        found = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
        missing = [w for w in WNIDS if w not in found]
        extra = [w for w in found if w not in BREEDS]
        if missing or extra:
            parts = []
            if missing:
                parts.append("missing " + ", ".join(f"{w} ({BREEDS[w]})" for w in missing))
            if extra:
                parts.append("unexpected folders " + ", ".join(extra))
            raise WoofError(f"{split_dir}: wrong class folders: {'; '.join(parts)}")


def list_samples(root: Path, split: str, noise: int = 0) -> list[Sample]:
    """Samples of one split in a stable order; `noise` picks a noisy-label column for train."""
    check_layout(root, (split,))
    noisy = _noisy_labels(root, noise) if noise and split == "train" else None
    samples = []
    for label, wnid in enumerate(WNIDS):
        for path in sorted((root / split / wnid).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                if noisy is not None:
                    label_wnid = noisy.get(f"{split}/{wnid}/{path.name}")
                    if label_wnid is None:
                        raise WoofError(f"{path} is not listed in noisy_imagewoof.csv")
                    samples.append(Sample(path, WNIDS.index(label_wnid)))
                else:
                    samples.append(Sample(path, label))
    if not samples:
        raise WoofError(f"{root / split} holds no images")
    return samples


def _noisy_labels(root: Path, noise: int) -> dict[str, str]:
    if noise not in NOISE_LEVELS:
        raise WoofError(f"--noise must be one of {', '.join(map(str, NOISE_LEVELS))}, not {noise}")
    csv_path = root / "noisy_imagewoof.csv"
    if not csv_path.is_file():
        raise WoofError(f"--noise {noise} needs {csv_path}, which is missing")
    column = f"noisy_labels_{noise}"
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or []):
            raise WoofError(f"{csv_path} has no column {column}")
        return {row["path"]: row[column] for row in reader}


def holdout_split(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Stratified (per class) split of train into (fit, hold-out); deterministic for a seed."""
    if not 0 < fraction < 1:
        raise WoofError(f"hold-out fraction must be between 0 and 1, not {fraction}")
    by_class: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        by_class[s.label].append(s)
    rng = random.Random(seed)
    fit, held = [], []
    for label in sorted(by_class):
        group = sorted(by_class[label], key=lambda s: s.path.name)
        rng.shuffle(group)
        n = max(1, round(len(group) * fraction))
        held += group[:n]
        fit += group[n:]
    return fit, held


def subset_per_class(samples: list[Sample], per_class: int) -> list[Sample]:
    """The first `per_class` samples of each class (tests and smoke runs)."""
    counts: dict[int, int] = defaultdict(int)
    out = []
    for s in samples:
        if counts[s.label] < per_class:
            counts[s.label] += 1
            out.append(s)
    return out


class ImageDataset:
    """A torch-style dataset over Samples; `transform` maps a PIL RGB image to a tensor."""

    def __init__(self, samples: list[Sample], transform):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        return self.transform(load_image(sample.path)), sample.label


def same_files(samples: list[Sample], other_root: Path) -> list[Sample]:
    """The same files (split/wnid/name) in another copy of Imagewoof, e.g. the 160 px set."""
    out = []
    for s in samples:
        path = Path(other_root) / s.path.parent.parent.name / s.path.parent.name / s.path.name
        if not path.is_file():
            raise WoofError(f"{other_root} is not a copy of the same Imagewoof: {path} is missing")
        out.append(Sample(path, s.label))
    return out


def shorter_side(root: Path, probe: int = 40) -> int | None:
    """The shorter side shared by the first `probe` train (else val) images, or None if they differ."""
    from PIL import Image

    sides = set()
    for split in SPLITS:
        if not (root / split).is_dir():
            continue
        for wnid in WNIDS:
            folder = root / split / wnid
            files = sorted(folder.iterdir())[: max(1, probe // len(WNIDS))] if folder.is_dir() else []
            for path in files:
                try:
                    with Image.open(path) as img:
                        sides.add(min(img.size))
                except OSError:
                    continue
        if sides:  # the first split that has images decides
            break
    return sides.pop() if len(sides) == 1 else None


def data_description(root: Path) -> dict[str, object]:
    """What a card records about its data: which Imagewoof copy (by its images' shorter side)."""
    side = shorter_side(root)
    name = {160: "imagewoof2-160", 320: "imagewoof2-320"}.get(side, "imagewoof2" if side is None else
                                                              f"imagewoof2 (shorter side {side})")
    return {"dataset": name, "shorter_side": side}
