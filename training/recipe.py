"""The recipe: every setting of a training run, with its default and help text.

A recipe file (training/configs/*.yaml) sets some of these fields; `woof train` flags are generated from them
(training/commands.py: recipe_flags), so a new field is a new flag without a second edit. Reading a recipe
needs no torch.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from woof.errors import WoofError

# a teacher named "zero-shot:efficientnet_lite2" is that untrained ImageNet model reading its 10 breed rows
ZERO_SHOT_TEACHER = "zero-shot:"


def teacher_names(teacher: str | list[str] | None) -> list[str]:
    """A recipe's teacher setting as a list: one folder, "a,b" (the CLI) or a list (a config file)."""
    if not teacher:
        return []
    names = teacher.split(",") if isinstance(teacher, str) else list(teacher)
    return [n.strip() for n in names if n.strip()]


def setting(default: Any, help: str):
    """A recipe field with its help text (the `woof train` flag is generated from it)."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """A recipe. Every field is a `woof train` flag (--field-name), its help text the field's `help`."""

    model: str = setting("efficientnet_lite0", "timm architecture name, e.g. efficientnet_lite0, convnext_tiny")
    pretrained: str = setting("imagenet", "imagenet | none")
    name: str | None = setting(None, "model name written in the card (default: the --out folder's name)")
    epochs: int = setting(3, "number of epochs")
    batch_size: int = setting(32, "images per step")
    lr: float = setting(1e-4, "peak learning rate (AdamW)")
    weight_decay: float = setting(0.05, "AdamW weight decay")
    warmup_epochs: float = setting(0.2, "linear warm-up length, then cosine decay")
    label_smoothing: float = setting(0.1, "label smoothing")
    train_size: int = setting(192, "random-resized-crop size for training")
    crop_scale: tuple[float, float] = setting((0.5, 1.0), "MIN,MAX area share of a random-resized crop")
    hflip: bool = setting(True, "random horizontal flips")
    eval_size: int | None = setting(None, "evaluation input size (default: the architecture's native)")
    head_init: str = setting("imagenet", "imagenet (rows of the 10 breeds) | random")
    freeze_bn: bool = setting(True, "keep BatchNorm's ImageNet statistics (default in the recipes)")
    noise: int = setting(0, "train on noisy labels: 0, 1, 5, 25 or 50 percent (noisy_imagewoof.csv)")
    holdout: float = setting(0.0, "fraction of train held out (stratified) and evaluated each epoch")
    holdout_seed: int = setting(0, "seed of the stratified hold-out split (fixed: 0 in every recipe, "
                                   "whatever the training seed)")
    holdout_also: str | None = setting(None, "another copy of Imagewoof (e.g. the 160 px set) where the same "
                                             "hold-out files are scored too")
    # people send small, recompressed photos too
    low_res_p: float = setting(0.0, "probability of shrinking a training photo before cropping (0: off)")
    low_res_side: tuple[int, int] = setting((128, 224), "MIN,MAX shorter side a shrunk training photo gets")
    mix_data: str | None = setting(None, "another copy of Imagewoof (e.g. the 160 px set: the same photos, smaller) "
                                         "that training photos are read from with probability --mix-p")
    mix_p: float = setting(0.0, "probability of reading a training photo from --mix-data (0: off)")
    teacher_view: str = setting("same", "with --mix-data: the teacher sees the same crop of the sharp copy (sharp) "
                                        "or the student's own input (same)")
    limit_per_class: int | None = setting(None, "use only N train images per class (smoke runs)")
    seed: int = setting(0, "random seed (data order, augmentation)")
    workers: int = setting(2, "data-loading processes")
    device: str = setting("auto", "auto | cpu | cuda")
    amp: str = setting("auto", "auto (bf16 on CUDA, off on CPU) | bf16 | off")
    channels_last: bool = setting(True, "channels_last memory format (about 2x faster on CPU)")
    teacher: str | list[str] | None = setting(
        None, "trained model folder to distil from, e.g. training/checkpoints/lite2, or zero-shot:ARCH (the "
              "untrained ImageNet model); several, comma-separated: their averaged logits")
    distill_alpha: float = setting(0.5, "weight of the distillation loss (0..1); 1 - alpha goes to the labels")
    distill_temperature: float = setting(2.0, "softmax temperature of the distillation loss")
    teacher_runtime: str = setting("onnxruntime", "onnxruntime (CPU: same logits, faster) | pytorch")
    wise_alpha: float = setting(1.0, "< 1: mix the final weights with the zero-shot start (WiSE-FT)")
    ema_decay: float = setting(0.0, "keep a moving average of the weights (e.g. 0.998) and save it; 0: off")
    extra: dict[str, Any] = field(default_factory=dict, metadata={"help": None})  # free-form notes, no flag

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            import difflib

            hints = [f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, known, 1)) else k
                     for k in unknown]
            raise WoofError(f"{where}: unknown setting {', '.join(hints)}")
        values = dict(values)
        for key in ("crop_scale", "low_res_side"):
            if key in values:
                values[key] = tuple(values[key])
        config = cls(**values)
        config.check()
        return config

    @classmethod
    def load(cls, path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> TrainConfig:
        try:
            values = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise WoofError(f"config file {path} does not exist") from None
        except yaml.YAMLError as e:
            raise WoofError(f"config file {path} is not valid YAML ({e})") from None
        if not isinstance(values, dict):
            raise WoofError(f"config file {path} must be a mapping of settings")
        values.update(overrides or {})
        return cls.from_dict(values, str(path))

    def check(self) -> None:
        def bad(msg: str):
            raise WoofError(f"config: {msg}")

        if self.epochs < 1:
            bad("epochs must be >= 1")
        if self.batch_size < 1:
            bad("batch_size must be >= 1")
        if not self.lr > 0:
            bad("lr must be > 0")
        if self.head_init not in ("imagenet", "random"):
            bad("head_init must be imagenet or random")
        if self.head_init == "imagenet" and self.pretrained != "imagenet":
            bad("head_init imagenet needs pretrained imagenet (use head_init: random)")
        if self.amp not in ("auto", "bf16", "off"):
            bad("amp must be auto, bf16 or off")
        if self.device not in ("auto", "cpu", "cuda"):
            bad("device must be auto, cpu or cuda")
        if not (0 < self.crop_scale[0] <= self.crop_scale[1] <= 1):
            bad("crop_scale must be two numbers 0 < min <= max <= 1")
        if not 0 <= self.holdout < 1:
            bad("holdout must be in [0, 1)")
        if self.holdout_also and not self.holdout:
            bad("holdout_also needs a hold-out (holdout > 0)")
        if self.holdout_also and not _repo_relative(self.holdout_also).is_dir():
            bad(f"holdout_also: {self.holdout_also} is not a folder")
        if not 0 <= self.low_res_p <= 1:
            bad("low_res_p must be in [0, 1]")
        if not 0 <= self.mix_p <= 1:
            bad("mix_p must be in [0, 1]")
        if self.mix_p and not self.mix_data:
            bad("mix_p > 0 needs mix_data (another copy of Imagewoof)")
        if self.mix_data and not _repo_relative(self.mix_data).is_dir():
            bad(f"mix_data: {self.mix_data} is not a folder")
        if self.teacher_view not in ("same", "sharp"):
            bad("teacher_view must be same or sharp")
        if self.teacher_view == "sharp" and not (self.mix_p and self.teacher):
            bad("teacher_view sharp needs a teacher and mix_data with mix_p > 0")
        if self.teacher_view == "sharp" and self.low_res_p:
            bad("teacher_view sharp pairs real copies; turn low_res_p off")
        if len(self.low_res_side) != 2 or not 8 <= self.low_res_side[0] <= self.low_res_side[1]:
            bad("low_res_side must be two sizes 8 <= min <= max")
        if not 0 <= self.distill_alpha <= 1:
            bad("distill_alpha must be in [0, 1]")
        if not self.distill_temperature > 0:
            bad("distill_temperature must be > 0")
        if self.teacher_runtime not in ("onnxruntime", "pytorch"):
            bad("teacher_runtime must be onnxruntime or pytorch")
        for given, folder in zip(self.teacher_names(), self.teacher_dirs()):
            if given.startswith(ZERO_SHOT_TEACHER):
                from .models import check_architecture  # here: a recipe is read without torch

                check_architecture(given[len(ZERO_SHOT_TEACHER):])
            elif not (folder / "card.json").is_file():
                bad(f"teacher {given} is not a trained model folder (no card.json) "
                    f"nor {ZERO_SHOT_TEACHER}ARCHITECTURE")
        if not 0 <= self.ema_decay < 1:
            bad("ema_decay must be in [0, 1) (0 turns the moving average off)")
        if not 0 <= self.wise_alpha <= 1:
            bad("wise_alpha must be in [0, 1]")
        if self.wise_alpha < 1 and (self.head_init != "imagenet" or not self.freeze_bn):
            bad("wise_alpha < 1 needs head_init imagenet and freeze_bn (the zero-shot start)")

    def teacher_names(self) -> list[str]:
        return teacher_names(self.teacher)

    def teacher_dirs(self) -> list[Path]:
        """The teacher folders as given, or relative to the repository (recipes say training/checkpoints/lite2)."""
        return [Path(name) if name.startswith(ZERO_SHOT_TEACHER) else _repo_relative(name)
                for name in self.teacher_names()]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["crop_scale"] = list(self.crop_scale)
        d["low_res_side"] = list(self.low_res_side)
        return d


def _repo_relative(name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() or path.exists() else Path(__file__).resolve().parents[1] / path


