"""Image transforms for training and evaluation (torchvision on top of the one preprocessing definition)."""

from __future__ import annotations

import random
from typing import Any

from woof.preprocess import load_image, preprocess


class RandomDownscale:
    """Shrink a PIL image so its shorter side is a random size in `sides` (never enlarges).

    The resampling filter is drawn too: the small photos people send were shrunk by many tools."""

    FILTERS = ("BILINEAR", "BICUBIC", "LANCZOS", "BOX")

    def __init__(self, sides: tuple[int, int]):
        self.sides = sides

    def __call__(self, img):
        from PIL import Image

        side = random.randint(*self.sides)
        width, height = img.size
        if side >= min(width, height):
            return img
        scale = side / min(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return img.resize(size, getattr(Image.Resampling, random.choice(self.FILTERS)))


class MixedCopies:
    """A training set that reads each photo from a second copy (e.g. 160 px) with probability p.

    DataLoader seeds Python's `random` in every worker, so the draw is reproducible for a seed."""

    def __init__(self, dataset, other_samples, p: float):
        self.dataset, self.other, self.p = dataset, other_samples, p

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        if random.random() < self.p:
            sample = self.other[index]
            return self.dataset.transform(load_image(sample.path)), sample.label
        return self.dataset[index]


class PairedCopies:
    """(student view, teacher view, label): with probability p the student sees a photo from the small copy and
    the teacher the same crop (same box in relative coordinates, same flip) of the sharp copy; else both see
    the same sharp crop. So a sharp-photo teacher teaches the student what small photos show."""

    def __init__(self, samples, small_samples, p: float, config, spec: dict[str, Any]):
        self.samples, self.small, self.p = samples, small_samples, p
        self.size, self.scale, self.hflip, self.spec = config.train_size, config.crop_scale, config.hflip, spec

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from torchvision import transforms as T
        from torchvision.transforms import functional as F

        sharp = load_image(self.samples[index].path)
        small = load_image(self.small[index].path) if random.random() < self.p else None
        top, left, height, width = T.RandomResizedCrop.get_params(sharp, self.scale, (3 / 4, 4 / 3))
        flip = self.hflip and random.random() < 0.5
        views = []
        for img in (small or sharp, sharp):
            k = img.width / sharp.width  # the same box, in this copy's pixels
            view = F.resized_crop(img, round(top * k), round(left * k), max(1, round(height * k)),
                                  max(1, round(width * k)), [self.size, self.size],
                                  T.InterpolationMode.BICUBIC, antialias=True)
            view = F.hflip(view) if flip else view
            views.append(F.normalize(F.to_tensor(view), self.spec["mean"], self.spec["std"]))
        return views[0], views[1], self.samples[index].label


def train_transform(config, spec: dict[str, Any]):
    from torchvision import transforms as T

    steps = [T.RandomApply([RandomDownscale(config.low_res_side)], p=config.low_res_p)] if config.low_res_p else []
    steps += [T.RandomResizedCrop(config.train_size, scale=config.crop_scale,
                                 interpolation=T.InterpolationMode.BICUBIC)]
    if config.hflip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(spec["mean"], spec["std"])]
    return T.Compose(steps)


def eval_transform(spec: dict[str, Any]):
    """The shared numpy/Pillow preprocessing, as a tensor transform."""
    import torch

    return lambda img: torch.from_numpy(preprocess(img, spec))


