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
    label_fraction: float = setting(1.0, "share of the train photos left after the hold-out that training sees with "
                                         "their labels (stratified, fixed seed; 0.1 = the label-scarce setting); "
                                         "the hold-out stays whole")
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
    # the objective: weights of the loss terms of the one loop (distillation is distill_alpha above)
    ce_weight: float = setting(1.0, "weight of cross-entropy on the labels (0: self-supervised only)")
    barlow_weight: float = setting(0.0, "weight of the Barlow Twins term on two augmented views (0: off); with "
                                        "ce_weight > 0 the cross-entropy is taken on both views (joint training)")
    barlow_lambda: float = setting(0.0051, "Barlow Twins off-diagonal weight (the paper's 0.0051)")
    projector: str = setting("2048-2048-2048", "Barlow Twins projector widths; the paper's 8192-8192-8192 costs "
                                              "~16x the projector compute and memory on a 2-core CPU")
    barlow_views: str = setting("byol", "the two views of the Barlow Twins term: byol (the paper's asymmetric pair: "
                                        "blur, solarisation, colour jitter, greyscale) | train (two draws of this "
                                        "recipe's own training crop and flip)")
    optimizer: str = setting("adamw", "adamw | lars (LARS as in Barlow Twins; biases and norms get no decay)")
    init: str | None = setting(None, "start the backbone from a `woof pretrain` folder (pretrained none; or "
                                     "imagenet for a folder continued from ImageNet: its ImageNet heads stay)")
    freeze_backbone: bool = setting(False, "train the breed head only (a linear probe of the backbone)")
    sync_bn: bool = setting(False, "under torchrun on CUDA: SyncBatchNorm in the Barlow Twins projector (PyTorch's "
                                   "SyncBatchNorm refuses CPU tensors; the loss is over the global batch anyway)")
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
        if not 0 < self.label_fraction <= 1:
            bad("label_fraction must be in (0, 1]")
        if self.label_fraction < 1 and self.barlow_weight:
            bad("label_fraction < 1 with barlow_weight: the joint loop has no unlabelled batches; pretrain on every "
                "photo with woof pretrain, then fine-tune with label_fraction")
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
                restore = (" (an old 160 px teacher: scripts/restore_teachers.sh brings it back from git history)"
                           if folder.parent.name == "teachers" else "")
                bad(f"teacher {given} is not a trained model folder (no card.json) "
                    f"nor {ZERO_SHOT_TEACHER}ARCHITECTURE{restore}")
        if not 0 <= self.ema_decay < 1:
            bad("ema_decay must be in [0, 1) (0 turns the moving average off)")
        if not 0 <= self.wise_alpha <= 1:
            bad("wise_alpha must be in [0, 1]")
        if self.wise_alpha < 1 and (self.head_init != "imagenet" or not self.freeze_bn):
            bad("wise_alpha < 1 needs head_init imagenet and freeze_bn (the zero-shot start)")
        if self.ce_weight < 0 or self.barlow_weight < 0:
            bad("ce_weight and barlow_weight must be >= 0")
        if not self.ce_weight and not self.barlow_weight:
            bad("nothing to learn: ce_weight and barlow_weight are both 0")
        if self.barlow_weight:
            from .barlow import parse_widths

            parse_widths(self.projector)
            if self.batch_size < 2:
                bad("Barlow Twins needs batch_size >= 2 (its cross-correlation is taken over the batch)")
            if not 0 < self.barlow_lambda < 1:
                bad("barlow_lambda must be in (0, 1)")
            if self.barlow_views not in ("byol", "train"):
                bad("barlow_views must be byol or train")
            if self.teacher or self.mix_p or self.low_res_p:
                bad("barlow_weight > 0 brings its own two views: no teacher, mix_data or low_res_p with it")
        if self.optimizer not in ("adamw", "lars"):
            bad("optimizer must be adamw or lars")
        if self.init:
            folder = _repo_relative(self.init)
            if not (folder / "card.json").is_file():
                bad(f"init: {self.init} is not a woof pretrain folder (no card.json)")
            from woof.card import read_card

            try:
                started = read_card(folder).get("recipe", {}).get("pretrained")
            except WoofError as e:
                bad(f"init: {self.init} is not a readable model card ({e})")
            # pretrained imagenet + init: the ImageNet heads (head_init imagenet, the open-set check) on the folder's
            # backbone, which only makes sense when that backbone was itself continued from ImageNet
            if self.pretrained == "imagenet" and started != "imagenet":
                bad(f"init: {self.init} was pretrained from random init, so it has no ImageNet head to keep: "
                    "set pretrained none (and head_init random)")
        if self.freeze_backbone and self.barlow_weight:
            bad("freeze_backbone trains the head only: Barlow Twins would have nothing to train")

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




@dataclass
class PretrainConfig:
    """A Barlow Twins pretraining recipe (`woof pretrain`; every field a flag). It runs in the same loop as
    `woof train`, as a run whose only loss term is Barlow Twins: see `to_train_config`."""

    model: str = setting("efficientnet_lite0", "timm architecture name")
    pretrained: str = setting("none", "none (random init, BatchNorm trained: the leak-free setting) | imagenet "
                                      "(continued pretraining)")
    freeze_bn: bool = setting(False, "keep BatchNorm's running statistics (continued pretraining from ImageNet: a "
                                     "frozen-BatchNorm fine-tune then normalises as ImageNet did)")
    name: str | None = setting(None, "name written in the card (default: the --out folder's name)")
    epochs: int = setting(20, "number of epochs")
    batch_size: int = setting(64, "images per step (two views each)")
    optimizer: str = setting("lars", "lars (the paper's) | adamw")
    lr: float = setting(0.2, "peak learning rate (LARS: the paper's 0.2 for weights, scaled by batch/256 there)")
    weight_decay: float = setting(1.5e-6, "weight decay (the paper's 1.5e-6); biases and norms get none")
    warmup_epochs: float = setting(2.0, "linear warm-up length, then cosine decay")
    train_size: int = setting(128, "size of each random-resized view")
    crop_scale: tuple[float, float] = setting((0.08, 1.0), "MIN,MAX area share of a view's crop")
    projector: str = setting("2048-2048-2048", "projector widths (the paper's 8192-8192-8192 is ~16x the cost)")
    barlow_lambda: float = setting(0.0051, "off-diagonal weight")
    split: str = setting("train", "the images to learn from: train only (never val)")
    holdout: float = setting(0.1, "fraction of train kept out (the fixed selection hold-out, never seen)")
    holdout_seed: int = setting(0, "seed of that hold-out (0 in every recipe)")
    limit_per_class: int | None = setting(None, "use only N train images per class (smoke runs)")
    seed: int = setting(0, "random seed")
    workers: int = setting(2, "data-loading processes")
    device: str = setting("auto", "auto | cpu | cuda")
    channels_last: bool = setting(True, "channels_last memory format")

    load = classmethod(TrainConfig.load.__func__)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config") -> PretrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise WoofError(f"{where}: unknown pretraining setting {', '.join(unknown)}")
        values = dict(values)
        if "crop_scale" in values:
            values["crop_scale"] = tuple(values["crop_scale"])
        config = cls(**values)
        if config.freeze_bn and config.pretrained != "imagenet":
            raise WoofError(f"{where}: freeze_bn keeps ImageNet's BatchNorm statistics: it needs pretrained imagenet "
                            "(a random init has none worth keeping)")
        if config.split != "train":
            raise WoofError(f"{where}: split {config.split!r}: pretraining reads train images only, never val")
        if not 0 < config.holdout < 1:
            raise WoofError(f"{where}: holdout must keep the selection hold-out out of pretraining (e.g. 0.1)")
        config.to_train_config().check()
        return config

    def to_train_config(self) -> TrainConfig:
        """The same run as a `woof train` recipe: Barlow Twins only, no labels, BatchNorm trained unless freeze_bn."""
        return TrainConfig(
            model=self.model, pretrained=self.pretrained, name=self.name, epochs=self.epochs,
            batch_size=self.batch_size, optimizer=self.optimizer, lr=self.lr, weight_decay=self.weight_decay,
            warmup_epochs=self.warmup_epochs, train_size=self.train_size, crop_scale=self.crop_scale,
            projector=self.projector, barlow_lambda=self.barlow_lambda, holdout=self.holdout,
            holdout_seed=self.holdout_seed, limit_per_class=self.limit_per_class, seed=self.seed,
            workers=self.workers, device=self.device, channels_last=self.channels_last,
            ce_weight=0.0, barlow_weight=1.0, head_init="random", freeze_bn=self.freeze_bn, label_smoothing=0.0,
            extra={"pretrain": dataclasses.asdict(self) | {"crop_scale": list(self.crop_scale)}})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"crop_scale": list(self.crop_scale)}
