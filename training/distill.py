"""Distillation as a loss term: frozen teachers whose temperature-softened predictions the student matches.

A teacher is a trained model folder or `zero-shot:ARCH` (the untrained ImageNet model reading its 10 breed
rows). On a CPU the teacher runs in onnxruntime when its logits match PyTorch's (2-3x faster).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .checkpoint import load_model
from .models import create_model, default_preprocessing
from .recipe import ZERO_SHOT_TEACHER, TrainConfig


class Teacher:
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


class OnnxTeacher(Teacher):
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
            fast = OnnxTeacher(ort_session(path, threads=torch.get_num_threads()), shift, scale, temperature,
                                INPUT_NAME, OUTPUT_NAMES[0])
        probe = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(0))
        gap = (fast.logits(probe) - Teacher(teacher, shift, scale, temperature).logits(probe)).abs().max().item()
    except Exception as exc:  # noqa: BLE001 - the PyTorch teacher always works; this is only a speed-up
        print(f"teacher stays in PyTorch (onnxruntime copy failed: {exc})")
        return None
    if gap > 1e-3:
        print(f"teacher stays in PyTorch (onnxruntime logits differ by {gap:.1e})")
        return None
    print(f"teacher runs in onnxruntime (largest logit difference to PyTorch {gap:.1e})")
    return fast


class EnsembleTeacher(Teacher):
    """Several teachers as one: their logits averaged (each re-normalises the batch its own way)."""

    def __init__(self, members: list[Teacher], temperature: float):
        super().__init__(None, 0, 1, temperature)
        self.members = members

    def logits(self, images):
        return sum(member.logits(images) for member in self.members) / len(self.members)


def load_teacher(config: TrainConfig, spec: dict[str, Any], device, memory_format) -> Teacher:
    members = [_load_one_teacher(folder, config, spec, device, memory_format) for folder in config.teacher_dirs()]
    return members[0] if len(members) == 1 else EnsembleTeacher(members, config.distill_temperature)


def _load_one_teacher(folder: Path, config: TrainConfig, spec: dict[str, Any], device, memory_format) -> Teacher:
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
    return fast or Teacher(teacher, shift, scale, config.distill_temperature)
