"""`woof train`: fine-tune a model on Imagewoof. One readable loop; the config is the recipe.

The small-data details decide the result here, so they are options of the recipe:
- `head_init: imagenet` starts the breed head from the ImageNet rows of the same 10 breeds,
  so step 0 is already the zero-shot baseline instead of a random guess;
- `freeze_bn: true` keeps BatchNorm's ImageNet statistics (9k images and batch 32 estimate them
  worse than ImageNet did);
- `train_size` / `eval_size`: train on smaller random crops, evaluate at the native resolution
  (objects look the same size at both: the "FixRes" effect).

- `teacher: <model folder>` distils a bigger trained model into this one (Hinton et al.): the
  student matches the teacher's temperature-softened probabilities on the same augmented crop
  (Beyer et al., "consistent teaching"), mixed with the label loss by `distill_alpha`.

A checkpoint (`last.pt`) is written atomically after every epoch; `--resume` continues from it.
"""

from __future__ import annotations

import csv
import math
import random
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from woof import card as cards
from woof.errors import WoofError
from woof.files import atomic_path

from . import checkpoint, distributed
from .checkpoint import load_model
from .distill import load_teacher
from .evaluate import predict_logits
from .models import count_parameters, create_model, default_preprocessing
from .recipe import TrainConfig, _repo_relative
from .transforms import MixedCopies, PairedCopies, train_transform
from .wise import mix

CHECKPOINT_FILE = "last.pt"
HISTORY_FILE = "history.csv"
def _lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _freeze_batchnorm(model) -> None:
    from torch import nn

    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def pick_device(requested: str):
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise WoofError("device cuda requested but no CUDA GPU is available")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


def _atomic_torch_save(obj, path: Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_training_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - zip/pickle errors vary; the user needs one message
        raise WoofError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}); "
                        "delete it to start over") from None


class Objective(torch.nn.Module):
    """The loss of one step, as weighted terms of the recipe: cross-entropy on the labels, distillation from
    teachers (distill_alpha), Barlow Twins on two views (barlow_weight). A module holding the model (and the
    Barlow Twins projector), so that one DistributedDataParallel wrapper syncs everything a step trains.
    Batches come as (images, labels), (student view, teacher view, labels) from PairedCopies, or (view a,
    view b, labels) from TwoViews."""

    def __init__(self, config: TrainConfig, model, teacher=None, barlow=None):
        import torch

        super().__init__()
        self.config, self.model, self.barlow = config, model, barlow
        self.teacher = teacher  # frozen, maybe an onnxruntime session: not a submodule, nothing to sync
        self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.views = 2 if barlow is not None else 1  # image-passes per sample

    def forward(self, first, second, labels):
        """(loss, breed logits or None, extra log terms) for one batch already on the device."""
        c = self.config
        if self.barlow is not None:
            f_a, f_b = self.model.features(first), self.model.features(second)
            loss, terms = self.barlow(f_a, f_b)
            loss = c.barlow_weight * loss
            logits = None
            if c.ce_weight:
                logits = self.model.head(f_a)
                ce = (self.criterion(logits.float(), labels)
                      + self.criterion(self.model.head(f_b).float(), labels)) / 2
                loss = loss + c.ce_weight * ce
            return loss, logits, terms
        logits = self.model(first)
        loss = c.ce_weight * self.criterion(logits.float(), labels)
        if self.teacher is not None:
            teacher_images = second if second is not None else first
            loss = (1 - c.distill_alpha) * loss + c.distill_alpha * self.teacher.loss(teacher_images, logits)
        return loss, logits, {}


def train_one_epoch(step, objective: Objective, loader, optimizer, scheduler, device, memory_format,
                    use_bf16: bool, ema=None, freeze_bn: bool = False, desc: str = "",
                    progress: bool = True) -> dict[str, Any]:
    """One pass over `loader` through `step` (the objective, or its DistributedDataParallel wrapper); returns
    the epoch's history row (loss, accuracy if labelled, speed, terms), summed over every process."""
    import torch
    from tqdm import tqdm

    objective.train()
    if freeze_bn:
        _freeze_batchnorm(objective.model)
    sums = torch.zeros(3, dtype=torch.float64)  # photos, right, loss x photos
    terms_sum: dict[str, float] = {}
    t0 = time.perf_counter()
    bar = tqdm(loader, desc=desc, disable=not progress, unit="batch")
    to = dict(memory_format=memory_format, non_blocking=True)
    for batch in bar:
        first = batch[0].to(device, **to)
        second = batch[1].to(device, **to) if len(batch) == 3 else None
        labels = batch[-1].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss, logits, terms = step(first, second, labels)
        if not torch.isfinite(loss):
            raise WoofError(f"loss became {loss.item()} ({desc}); lower lr (the last good checkpoint is kept)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(objective.model)
        n = len(labels)
        sums += torch.tensor([n, (logits.argmax(1) == labels).sum().item() if logits is not None else 0,
                              loss.item() * n], dtype=torch.float64)
        for k, v in terms.items():
            terms_sum[k] = terms_sum.get(k, 0.0) + v * n
        elapsed = time.perf_counter() - t0
        bar.set_postfix(loss=f"{sums[2] / sums[0]:.3f}", img_s=f"{sums[0] * objective.views / elapsed:.1f}",
                        lr=f"{scheduler.get_last_lr()[0]:.2e}",
                        **({"acc": f"{sums[1] / sums[0]:.3f}"} if logits is not None else {}))
    seconds = time.perf_counter() - t0
    keys = sorted(terms_sum)
    total = torch.cat([sums, torch.tensor([terms_sum[k] for k in keys], dtype=torch.float64)])
    total = distributed.all_sum(total)
    seen, correct, loss_sum = total[0].item(), total[1].item(), total[2].item()
    if not seen:
        raise WoofError("no full batch to train on: fewer training images than batch_size")
    return {"train_loss": round(loss_sum / seen, 4),
            "train_acc": round(correct / seen, 4) if objective.config.ce_weight else "",
            "lr": scheduler.get_last_lr()[0], "seconds": round(seconds, 1),
            "image_passes": int(seen) * objective.views, "images_per_s": round(seen * objective.views / seconds, 1),
            **{k: round(total[3 + i].item() / seen, 5) for i, k in enumerate(keys)}}


def evaluate_holdout(model, samples, spec, device, workers: int, progress: bool) -> float:
    logits, labels = predict_logits(model, samples, spec, batch_size=64, workers=workers, progress=progress,
                                    device=device)
    return round(float((logits.argmax(1) == labels).mean()), 4)


def make_optimizer(config: TrainConfig, model, extra_modules=()):
    """AdamW or LARS; biases and norm weights (1-d tensors) get no weight decay, as in the references."""
    import torch

    decay, no_decay = [], []
    for module in (model, *extra_modules):
        for p in module.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "lars":
        from lightly.utils.lars import LARS

        return LARS(groups, lr=config.lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=config.lr)


def _init_from_pretrain(model, folder: Path, architecture: str) -> None:
    """Load a `woof pretrain` folder's backbone into `model` (the heads stay as they are)."""
    init_model, card = load_model(folder)
    if card["architecture"] != architecture:
        raise WoofError(f"init: {folder} holds a {card['architecture']} backbone, not {architecture}")
    model.backbone.load_state_dict(init_model.backbone.state_dict())


def build_model(config: TrainConfig, spec: dict[str, Any], resuming: bool):
    model = create_model(config.model, pretrained="none" if resuming else config.pretrained,
                         imagenet_head=config.pretrained == "imagenet")
    if not resuming and config.init:
        _init_from_pretrain(model, _repo_relative(config.init), config.model)
    if not resuming and config.head_init == "imagenet":
        model.init_head_from_imagenet()
    if config.freeze_backbone:
        model.backbone.requires_grad_(False)
    return model


def training_set(config: TrainConfig, samples, spec: dict[str, Any]):
    from .data import ImageDataset, same_files

    if config.barlow_weight:
        from .barlow import TwoViews, two_view_transforms

        if config.barlow_views == "train":  # two independent draws of the recipe's own crop and flip
            return TwoViews(samples, (train_transform(config, spec),) * 2)
        return TwoViews(samples, two_view_transforms(config.train_size, spec, config.crop_scale[0]))
    if config.mix_p and config.teacher_view == "sharp":
        return PairedCopies(samples, same_files(samples, _repo_relative(config.mix_data)), config.mix_p, config, spec)
    dataset = ImageDataset(samples, train_transform(config, spec))
    if config.mix_p:
        return MixedCopies(dataset, same_files(samples, _repo_relative(config.mix_data)), config.mix_p)
    return dataset


def training_samples(config: TrainConfig, data_root: Path):
    """(train photos, hold-out photos, the same hold-out files in `holdout_also`'s copy) for a recipe."""
    from .data import EXPECTED_COUNTS, holdout_split, list_samples, same_files, subset_per_class

    samples = list_samples(data_root, "train", noise=config.noise)
    if len(samples) != EXPECTED_COUNTS["train"]:  # never train on a partial set without saying so
        print(f"warning: {data_root / 'train'} holds {len(samples):,} images, the official imagewoof2 train split "
              f"{EXPECTED_COUNTS['train']:,} (check it with woof data verify --expect 320)")
    held: list = []
    if config.holdout:
        samples, held = holdout_split(samples, config.holdout, config.holdout_seed)
    if config.label_fraction < 1:  # the labelled share: a stratified draw whose seed no training seed moves
        _, samples = holdout_split(samples, config.label_fraction, config.holdout_seed + 1)
    if config.limit_per_class:
        samples = subset_per_class(samples, config.limit_per_class)
        held = subset_per_class(held, config.limit_per_class)
    held_also = same_files(held, _repo_relative(config.holdout_also)) if config.holdout_also else []
    return samples, held, held_also


def build_objective(config: TrainConfig, spec: dict[str, Any], device, memory_format, state=None) -> Objective:
    """The model (from the checkpoint `state` when resuming), the Barlow Twins projector and the teachers the
    recipe's loss terms need, on the device, as one Objective."""
    model = build_model(config, spec, resuming=state is not None)
    barlow = None
    if config.barlow_weight:
        from .barlow import BarlowTwins, parse_widths

        barlow = BarlowTwins(model.backbone.num_features if hasattr(model.backbone, "num_features")
                             else model.head.in_features, parse_widths(config.projector), config.barlow_lambda)
        if config.sync_bn and distributed.world_size() > 1:
            barlow = torch.nn.SyncBatchNorm.convert_sync_batchnorm(barlow)
        barlow.to(device)
    if config.barlow_weight and not config.ce_weight:
        model.head.requires_grad_(False)  # self-supervised only: the breed head gets no gradient (DDP insists)
    if state:
        model.load_state_dict(state["model"])
        if barlow is not None:
            barlow.load_state_dict(state["barlow"])
    model.to(device, memory_format=memory_format)
    teacher = load_teacher(config, spec, device, memory_format) if config.teacher_names() else None
    return Objective(config, model, teacher, barlow)


def train(config: TrainConfig, data_root: Path, out_dir: Path, resume: bool = False,
          progress: bool = True, command: str | None = None) -> dict[str, Any]:
    """Train; returns a summary. Writes last.pt, history.csv, model.safetensors, card.json."""
    import torch

    out_dir = Path(out_dir)
    checkpoint_path = out_dir / CHECKPOINT_FILE
    state = None
    if resume:
        if not checkpoint_path.is_file():
            raise WoofError(f"--resume: no checkpoint at {checkpoint_path}")
        state = load_training_checkpoint(checkpoint_path)
        saved = TrainConfig.from_dict(state["config"], str(checkpoint_path))
        if saved.model != config.model:
            raise WoofError(f"--resume: {checkpoint_path} is a {saved.model} run, not {config.model}")
        config = saved
    elif checkpoint_path.exists():
        raise WoofError(f"{out_dir} already holds a training run; use --resume to continue it "
                        "or choose another --out")

    _seed_everything(config.seed)
    device = distributed.setup(pick_device(config.device))  # under torchrun: join the group, pick this rank's GPU
    main_process, world = distributed.is_main(), distributed.world_size()
    progress = progress and main_process
    if config.sync_bn and device.type != "cuda":
        raise WoofError("sync_bn needs CUDA (PyTorch's SyncBatchNorm refuses CPU tensors); on CPU the Barlow Twins "
                        "loss is taken over the global batch without it")
    use_bf16 = config.amp == "bf16" or (config.amp == "auto" and device.type == "cuda")
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format

    samples, held, held_also = training_samples(config, data_root)
    spec = default_preprocessing(config.model, config.eval_size)
    objective = build_objective(config, spec, device, memory_format, state)
    model, barlow = objective.model, objective.barlow
    torch.manual_seed(config.seed + distributed.rank())  # the same start everywhere, then each rank its own draws
    step = objective
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        step = DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
    ema = None
    if config.ema_decay:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)

    optimizer = make_optimizer(config, model, [barlow] if barlow is not None else [])
    steps_per_epoch = max(1, len(samples) // (config.batch_size * world))  # batch_size is per process
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = max(1, int(config.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, warmup_steps, total_steps))

    start_epoch, train_seconds, image_passes = 0, 0.0, 0
    if state:
        start_epoch, train_seconds, image_passes = _restore(state, config, optimizer, scheduler, ema)
    loader, sampler = _loader(config, training_set(config, samples, spec), start_epoch, device)
    history_path = out_dir / HISTORY_FILE
    if main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        if start_epoch == 0:
            (out_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
            history_path.unlink(missing_ok=True)

    terms = " + ".join(t for t, on in (("cross-entropy", config.ce_weight),
                                       ("distillation", objective.teacher is not None),
                                       ("Barlow Twins", barlow is not None)) if on)
    say = print if main_process else (lambda *a, **k: None)
    say(f"training {config.model} on {len(samples)} images ({len(held)} held out), "
        f"{config.epochs} epochs, {terms}, device {device}{', bf16' if use_bf16 else ''}"
        + (f", {world} processes x batch {config.batch_size}" if world > 1 else "")
        + f", {count_parameters(model) / 1e6:.2f} M parameters")
    for epoch in range(start_epoch, config.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        row = {"epoch": epoch + 1, **train_one_epoch(
            step, objective, loader, optimizer, scheduler, device, memory_format, use_bf16, ema,
            config.freeze_bn, f"epoch {epoch + 1}/{config.epochs}", progress), "holdout_acc": ""}
        train_seconds += row["seconds"]
        image_passes += row["image_passes"]
        if main_process:  # every rank holds the same weights: rank 0 scores the whole hold-out, unpadded
            if held and config.ce_weight:
                row["holdout_acc"] = evaluate_holdout(model, held, spec, device, config.workers, progress)
                if held_also:
                    row[f"holdout_acc_{Path(config.holdout_also).name}"] = evaluate_holdout(
                        model, held_also, spec, device, config.workers, progress)
                if ema is not None:  # the same images, so raw and averaged weights compare pairwise
                    row["holdout_acc_ema"] = evaluate_holdout(ema.module, held, spec, device, config.workers,
                                                              progress)
            _atomic_torch_save({
                "config": config.to_dict(), "epoch": epoch + 1, "train_seconds": train_seconds,
                "image_passes": image_passes, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "barlow": barlow.state_dict() if barlow is not None else None,
                "scheduler": scheduler.state_dict(), "rng_torch": torch.get_rng_state(),
                "ema": ema.state_dict() if ema is not None else None,
                "rng_python": _save_py_rng(random.getstate()), "command": command or (state or {}).get("command"),
            }, checkpoint_path)
            _append_history(history_path, row)
            say(epoch_summary(row))
        distributed.barrier()  # the others wait while rank 0 evaluates and writes

    if world > 1:
        _check_replicas_agree(model)
    if ema is not None:
        model = ema.module
    model = model.cpu().to(memory_format=torch.contiguous_format)
    if not main_process:
        distributed.barrier()
        distributed.cleanup()
        return {"out": str(out_dir), "seconds": train_seconds, "card": None}
    from .data import data_description

    card = save_model(
        out_dir, config, model, spec, command=command or (state or {}).get("command"),
        data={"train_images": len(samples), "holdout_images": len(held),
              "noise": config.noise, "holdout_fraction": config.holdout,
              "holdout_seed": config.holdout_seed if held else None, **data_description(data_root)},
        training={"seconds": round(train_seconds, 1), "epochs": config.epochs, "hardware": checkpoint.hardware(),
                  "device": str(device), "image_passes": image_passes, "objective": terms,
                  "processes": world, "global_batch": config.batch_size * world})
    say(f"saved {out_dir / cards.WEIGHTS_FILE} and {out_dir / cards.CARD_FILE}")
    distributed.barrier()
    distributed.cleanup()
    return {"out": str(out_dir), "seconds": train_seconds, "card": card}


def _restore(state: dict[str, Any], config: TrainConfig, optimizer, scheduler, ema) -> tuple[int, float, int]:
    """Continue a checkpointed run: optimiser, schedule, moving average and random state; returns (epochs done,
    seconds trained, image-passes so far)."""
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    torch.set_rng_state(state["rng_torch"])
    random.setstate(_restore_py_rng(state["rng_python"]))
    start_epoch = state["epoch"]
    if distributed.world_size() > 1:  # rank 0's saved state, then each rank its own augmentation again
        torch.manual_seed(config.seed + 1000 * start_epoch + distributed.rank())
        random.seed(config.seed + 1000 * start_epoch + distributed.rank())
    return start_epoch, state["train_seconds"], state.get("image_passes", 0)


def _loader(config: TrainConfig, dataset, start_epoch: int, device):
    """(DataLoader, DistributedSampler or None): full batches only (drop_last: the Barlow Twins cross-correlation
    needs whole batches), shuffled from the seed and the epoch the run starts at."""
    from torch.utils.data import DataLoader

    generator = torch.Generator().manual_seed(config.seed + start_epoch)
    sampler = None
    if distributed.world_size() > 1:  # each rank its share of a per-epoch reshuffle of the same order (set_epoch)
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset, shuffle=True, seed=config.seed, drop_last=True)
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=sampler is None, sampler=sampler,
                        drop_last=True, num_workers=config.workers, generator=generator,
                        persistent_workers=config.workers > 0, pin_memory=device.type == "cuda")
    return loader, sampler


def save_model(out_dir: Path, config: TrainConfig, model, spec: dict[str, Any], data: dict[str, Any],
               training: dict[str, Any], command: str | None) -> dict[str, Any]:
    """Write the trained weights and their card (a retrained folder continues its version line); the card."""
    if config.wise_alpha < 1:
        mix(model, config.model, config.wise_alpha)
    _, sha = checkpoint.save_weights(model, out_dir)
    card = cards.new_card(name=config.name or out_dir.name, architecture=config.model, preprocessing=spec,
                          parameters=count_parameters(model), weights_sha256=sha, recipe=config.to_dict(),
                          data=data, training=training, has_imagenet_head=model.imagenet_head is not None,
                          command=command)
    if not config.ce_weight:  # a backbone for `woof train --init`: its breed head never learned anything
        card["kind"] = "barlow_twins_pretrain"
    if config.wise_alpha < 1:
        card["wise_ft"] = {"alpha": config.wise_alpha, "source": "this run's final epoch"}
    if (out_dir / cards.CARD_FILE).exists():  # a retrained model continues its version line
        cards.succeed(card, cards.read_card(out_dir))  # metrics are not kept: new weights
    cards.write_card(out_dir, card)
    return card


def epoch_summary(row: dict[str, Any]) -> str:
    """One history row as the line printed after each epoch."""
    return (f"epoch {row['epoch']}: loss {row['train_loss']}"
            + (f", train acc {row['train_acc']}" if row["train_acc"] != "" else "")
            + "".join(f", {k} {row[k]}" for k in ("bt_on_diag", "bt_off_diag", "embedding_std") if k in row)
            + f", {row['images_per_s']} img/s, {row['seconds']} s"
            + (f", hold-out acc {row['holdout_acc']}" if row["holdout_acc"] != "" else "")
            + "".join(f", {k[len('holdout_acc_'):]} {v}" for k, v in row.items()
                      if k.startswith("holdout_acc_") and k != "holdout_acc_ema")
            + (f" (moving average {row['holdout_acc_ema']})" if "holdout_acc_ema" in row else ""))


def _append_history(path: Path, row: dict[str, Any]) -> None:
    new_file = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new_file:
            writer.writeheader()
        writer.writerow(row)


def _check_replicas_agree(model) -> None:
    """DistributedDataParallel keeps the replicas equal; check it before rank 0 saves (a cheap checksum)."""
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).cpu()
    total = distributed.all_sum(checksum.clone())
    if not torch.allclose(total, checksum * distributed.world_size(), rtol=1e-9, atol=1e-6):
        raise WoofError("the processes' weights differ after training (a DistributedDataParallel bug?)")
    if distributed.is_main():
        print(f"parameters identical across {distributed.world_size()} processes")


def _save_py_rng(state) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _restore_py_rng(saved) -> tuple:
    version, internal, gauss = saved
    return (version, tuple(internal), gauss)
