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

import yaml

from woof import card as cards
from woof.errors import WoofError
from woof.files import atomic_path

from . import checkpoint
from .checkpoint import load_model
from .evaluate import predict_logits
from .models import count_parameters, create_model, default_preprocessing
from .recipe import ZERO_SHOT_TEACHER, TrainConfig, _repo_relative
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


def train(config: TrainConfig, data_root: Path, out_dir: Path, resume: bool = False,
          progress: bool = True, command: str | None = None) -> dict[str, Any]:
    """Train; returns a summary. Writes last.pt, history.csv, model.safetensors, card.json."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from .data import (
        EXPECTED_COUNTS,
        ImageDataset,
        data_description,
        holdout_split,
        list_samples,
        same_files,
        subset_per_class,
    )

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
    device = pick_device(config.device)
    use_bf16 = config.amp == "bf16" or (config.amp == "auto" and device.type == "cuda")
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format

    samples = list_samples(data_root, "train", noise=config.noise)
    if len(samples) != EXPECTED_COUNTS["train"]:  # never train on a partial set without saying so
        print(f"warning: {data_root / 'train'} holds {len(samples):,} images, the official imagewoof2 train split "
              f"{EXPECTED_COUNTS['train']:,} (check it with woof data verify --expect 320)")
    held: list = []
    if config.holdout:
        samples, held = holdout_split(samples, config.holdout, config.holdout_seed)
    if config.limit_per_class:
        samples = subset_per_class(samples, config.limit_per_class)
        held = subset_per_class(held, config.limit_per_class)
    held_also = same_files(held, _repo_relative(config.holdout_also)) if config.holdout_also else []

    model = create_model(config.model, pretrained="none" if state else config.pretrained,
                         imagenet_head=config.pretrained == "imagenet")
    spec = default_preprocessing(config.model, config.eval_size)
    if state:
        model.load_state_dict(state["model"])
    elif config.head_init == "imagenet":
        model.init_head_from_imagenet()
    model.to(device, memory_format=memory_format)
    teacher = _load_teacher(config, spec, device, memory_format) if config.teacher_names() else None
    ema = None
    if config.ema_decay:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)

    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    steps_per_epoch = max(1, len(samples) // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = max(1, int(config.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, warmup_steps, total_steps))
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    start_epoch, train_seconds = 0, 0.0
    if state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, train_seconds = state["epoch"], state["train_seconds"]
        if ema is not None:
            ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng_torch"])
        random.setstate(_restore_py_rng(state["rng_python"]))

    generator = torch.Generator().manual_seed(config.seed + start_epoch)
    dataset = ImageDataset(samples, train_transform(config, spec))
    if config.mix_p and config.teacher_view == "sharp":
        dataset = PairedCopies(samples, same_files(samples, _repo_relative(config.mix_data)), config.mix_p,
                               config, spec)
    elif config.mix_p:
        dataset = MixedCopies(dataset, same_files(samples, _repo_relative(config.mix_data)), config.mix_p)
    loader = DataLoader(dataset, batch_size=config.batch_size,
                        shuffle=True, drop_last=True, num_workers=config.workers, generator=generator,
                        persistent_workers=config.workers > 0, pin_memory=device.type == "cuda")
    out_dir.mkdir(parents=True, exist_ok=True)
    history_path = out_dir / HISTORY_FILE
    if start_epoch == 0:
        (out_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        history_path.unlink(missing_ok=True)

    print(f"training {config.model} on {len(samples)} images ({len(held)} held out), "
          f"{config.epochs} epochs, device {device}{', bf16' if use_bf16 else ''}, "
          f"{count_parameters(model) / 1e6:.2f} M parameters")
    for epoch in range(start_epoch, config.epochs):
        model.train()
        if config.freeze_bn:
            _freeze_batchnorm(model)
        seen = correct = 0
        loss_sum = 0.0
        t0 = time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, unit="batch")
        for batch in bar:
            images, labels = batch[0], batch[-1]  # PairedCopies adds the teacher's view in between
            images = images.to(device, memory_format=memory_format, non_blocking=True)
            teacher_images = batch[1].to(device, memory_format=memory_format) if len(batch) == 3 else images
            labels = labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = model(images)
                loss = criterion(logits.float(), labels)
                if teacher is not None:
                    loss = ((1 - config.distill_alpha) * loss
                            + config.distill_alpha * teacher.loss(teacher_images, logits))
            if not torch.isfinite(loss):
                raise WoofError(f"loss became {loss.item()} at epoch {epoch + 1}; lower lr "
                                f"(the last good checkpoint is {checkpoint_path})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            seen += len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            loss_sum += loss.item() * len(labels)
            elapsed = time.perf_counter() - t0
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                            img_s=f"{seen / elapsed:.1f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        epoch_seconds = time.perf_counter() - t0
        train_seconds += epoch_seconds
        row = {"epoch": epoch + 1, "train_loss": round(loss_sum / seen, 4), "train_acc": round(correct / seen, 4),
               "lr": scheduler.get_last_lr()[0], "seconds": round(epoch_seconds, 1),
               "images_per_s": round(seen / epoch_seconds, 1), "holdout_acc": ""}
        if held:
            def holdout_acc(module, images) -> float:
                logits, labels = predict_logits(module, images, spec, batch_size=64, workers=config.workers,
                                                progress=progress, device=device)
                return round(float((logits.argmax(1) == labels).mean()), 4)

            row["holdout_acc"] = holdout_acc(model, held)
            if held_also:
                row[f"holdout_acc_{Path(config.holdout_also).name}"] = holdout_acc(model, held_also)
            if ema is not None:  # the same images, so raw and averaged weights compare pairwise
                row["holdout_acc_ema"] = holdout_acc(ema.module, held)
        _atomic_torch_save({
            "config": config.to_dict(), "epoch": epoch + 1, "train_seconds": train_seconds,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng_torch": torch.get_rng_state(),
            "ema": ema.state_dict() if ema is not None else None,
            "rng_python": _save_py_rng(random.getstate()), "command": command or (state or {}).get("command"),
        }, checkpoint_path)
        new_file = not history_path.exists()
        with history_path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new_file:
                writer.writeheader()
            writer.writerow(row)
        print(f"epoch {epoch + 1}: loss {row['train_loss']}, train acc {row['train_acc']}, "
              f"{row['images_per_s']} img/s, {row['seconds']} s"
              + (f", hold-out acc {row['holdout_acc']}" if held else "")
              + "".join(f", {k[len('holdout_acc_'):]} {v}" for k, v in row.items()
                        if k.startswith("holdout_acc_") and k != "holdout_acc_ema")
              + (f" (moving average {row['holdout_acc_ema']})" if held and ema is not None else ""))

    if ema is not None:
        model = ema.module
    model = model.cpu().to(memory_format=torch.contiguous_format)
    if config.wise_alpha < 1:

        mix(model, config.model, config.wise_alpha)
    weights_path, sha = checkpoint.save_weights(model, out_dir)
    card = cards.new_card(
        name=config.name or out_dir.name,
        architecture=config.model,
        preprocessing=spec,
        parameters=count_parameters(model),
        weights_sha256=sha,
        recipe=config.to_dict(),
        data={"train_images": len(samples), "holdout_images": len(held),
              "noise": config.noise, "holdout_fraction": config.holdout,
              "holdout_seed": config.holdout_seed if held else None, **data_description(data_root)},
        training={"seconds": round(train_seconds, 1), "epochs": config.epochs, "hardware": checkpoint.hardware(),
                  "device": str(device)},
        has_imagenet_head=model.imagenet_head is not None,
        command=command or (state or {}).get("command"),
    )
    if config.wise_alpha < 1:
        card["wise_ft"] = {"alpha": config.wise_alpha, "source": "this run's final epoch"}
    if (out_dir / cards.CARD_FILE).exists():  # a retrained model continues its version line
        cards.succeed(card, cards.read_card(out_dir))  # metrics are not kept: new weights
    cards.write_card(out_dir, card)
    print(f"saved {weights_path} and {out_dir / cards.CARD_FILE}")
    return {"out": str(out_dir), "seconds": train_seconds, "card": card}


class _Teacher:
    """A frozen trained model whose softened predictions the student learns to match."""

    def __init__(self, model, shift, scale, temperature: float):
        self.model, self.shift, self.scale, self.temperature = model, shift, scale, temperature

    def logits(self, images):
        import torch

        with torch.no_grad():
            return self.model(images * self.scale + self.shift).float()

    def loss(self, images, student_logits):
        import torch.nn.functional as F

        target = self.logits(images)
        t = self.temperature
        # KL(teacher || student) on softened distributions, times t^2 so its gradients keep their size.
        return F.kl_div(F.log_softmax(student_logits.float() / t, 1), F.log_softmax(target / t, 1),
                        reduction="batchmean", log_target=True) * t * t


class _OnnxTeacher(_Teacher):
    """The same frozen teacher run by onnxruntime (fp32): the same logits, 2-3x faster than eager PyTorch
    on a CPU, which matters because the teacher's forward pass is a third of a distillation step."""

    def __init__(self, session, shift, scale, temperature: float, input_name: str, output_name: str):
        super().__init__(session, shift, scale, temperature)
        self.input, self.output = input_name, output_name

    def logits(self, images):
        import torch

        batch = (images * self.scale + self.shift).float().contiguous().numpy()  # NCHW, as exported
        return torch.from_numpy(self.model.run([self.output], {self.input: batch})[0])


def _onnx_teacher(teacher, card: dict[str, Any], size: int, shift, scale, temperature: float):
    """An onnxruntime copy of the teacher at the student's crop size, if it matches PyTorch (else None)."""
    import tempfile

    import torch

    try:
        import onnxruntime  # noqa: F401

        from .export import INPUT_NAME, OUTPUT_NAMES, export_onnx, ort_session
    except ImportError:
        return None
    try:
        with tempfile.TemporaryDirectory(prefix="woof-teacher-") as folder:  # the session keeps the model in memory
            path = export_onnx(teacher, {**card["preprocessing"], "input_size": size}, Path(folder) / "teacher.onnx")
            fast = _OnnxTeacher(ort_session(path, threads=torch.get_num_threads()), shift, scale, temperature,
                                INPUT_NAME, OUTPUT_NAMES[0])
        probe = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(0))
        gap = (fast.logits(probe) - _Teacher(teacher, shift, scale, temperature).logits(probe)).abs().max().item()
    except Exception as exc:  # noqa: BLE001 - the PyTorch teacher always works; this is only a speed-up
        print(f"teacher stays in PyTorch (onnxruntime copy failed: {exc})")
        return None
    if gap > 1e-3:
        print(f"teacher stays in PyTorch (onnxruntime logits differ by {gap:.1e})")
        return None
    print(f"teacher runs in onnxruntime (largest logit difference to PyTorch {gap:.1e})")
    return fast


class _EnsembleTeacher(_Teacher):
    """Several teachers as one: their logits averaged (each re-normalises the batch its own way)."""

    def __init__(self, members: list[_Teacher], temperature: float):
        super().__init__(None, 0, 1, temperature)
        self.members = members

    def logits(self, images):
        return sum(member.logits(images) for member in self.members) / len(self.members)


def _load_teacher(config: TrainConfig, spec: dict[str, Any], device, memory_format) -> _Teacher:
    members = [_load_one_teacher(folder, config, spec, device, memory_format) for folder in config.teacher_dirs()]
    return members[0] if len(members) == 1 else _EnsembleTeacher(members, config.distill_temperature)


def _load_one_teacher(folder: Path, config: TrainConfig, spec: dict[str, Any], device, memory_format) -> _Teacher:
    import torch

    if folder.name.startswith(ZERO_SHOT_TEACHER):  # keeps what ImageNet pretraining knows (see README)

        arch = folder.name[len(ZERO_SHOT_TEACHER):]
        teacher = create_model(arch, pretrained="imagenet")
        teacher.init_head_from_imagenet()  # its breed head = the ImageNet rows: forward() is the zero-shot answer
        card = {"name": f"zero-shot {arch}", "architecture": arch, "preprocessing": default_preprocessing(arch)}
    else:
        teacher, card = load_model(folder)  # read_card checks the classes and their order
    teacher.to(device, memory_format=memory_format).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    # The student's batch is normalised with its own mean/std; re-normalise for the teacher.
    s_mean, s_std = (torch.tensor(spec[k], device=device).view(1, 3, 1, 1) for k in ("mean", "std"))
    t_mean, t_std = (torch.tensor(card["preprocessing"][k], device=device).view(1, 3, 1, 1) for k in ("mean", "std"))
    scale = s_std / t_std
    shift = (s_mean - t_mean) / t_std
    print(f"distilling from {card['name']} ({card['architecture']}, "
          f"val top-1 {card.get('metrics', {}).get('val', {}).get('top1', '?')}), "
          f"alpha {config.distill_alpha}, temperature {config.distill_temperature}")
    fast = None
    if device.type == "cpu" and config.teacher_runtime == "onnxruntime":
        fast = _onnx_teacher(teacher, card, config.train_size, shift, scale, config.distill_temperature)
    return fast or _Teacher(teacher, shift, scale, config.distill_temperature)


def _save_py_rng(state) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _restore_py_rng(saved) -> tuple:
    version, internal, gauss = saved
    return (version, tuple(internal), gauss)
