"""Barlow Twins (Zbontar et al., 2021) as a loss term of woof's one training loop, on lightly's implementation.

Two differently augmented views of each photo go through the backbone and a projector MLP; the loss pushes
the cross-correlation matrix C of the two batch-normalised embeddings toward the identity:
    Σ_i (1 - C_ii)²  +  λ Σ_{i≠j} C_ij²          (λ = 0.0051 as in the paper)
lightly supplies the loss (`BarlowTwinsLoss`), the projector blocks (`ProjectionHead`), the two asymmetric
view transforms (`BYOLView1Transform` / `BYOLView2Transform`: blur p 1.0 / 0.1, solarisation p 0 / 0.2,
colour jitter p 0.8, greyscale p 0.2, flip, random-resized crop), LARS and the kNN classifier. This module
only wires them to woof's models, preprocessing and logs, and adds the two terms and the embedding spread
as a collapse monitor (checked against lightly's loss in the tests).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from woof.errors import WoofError

from . import distributed

DEFAULT_LAMBDA = 0.0051


def parse_widths(text: str) -> list[int]:
    """'2048-2048-2048' -> [2048, 2048, 2048]: the projector's layer widths, the last one the embedding."""
    try:
        widths = [int(part) for part in str(text).split("-")]
    except ValueError:
        raise WoofError(f"projector {text!r}: give layer widths joined by '-', e.g. 2048-2048-2048") from None
    if not widths or any(w < 2 for w in widths) or len(widths) > 4:
        raise WoofError(f"projector {text!r}: 1 to 4 layers, each at least 2 wide, e.g. 2048-2048-2048")
    return widths


def projector(in_features: int, widths: list[int]) -> nn.Module:
    """Linear-BN-ReLU blocks, then a plain linear layer (the paper's 8192-8192-8192 shape, any widths)."""
    from lightly.models.modules.heads import ProjectionHead

    blocks, width = [], in_features
    for i, out in enumerate(widths):
        last = i == len(widths) - 1
        blocks.append((width, out, None if last else nn.BatchNorm1d(out), None if last else nn.ReLU(inplace=True)))
        width = out
    return ProjectionHead(blocks)


def correlation_terms(z_a: torch.Tensor, z_b: torch.Tensor) -> dict[str, float]:
    """The loss's two terms and the embeddings' mean per-dimension std (near 0 means collapse), for the log."""
    with torch.no_grad():
        n = z_a.shape[0]
        za = (z_a - z_a.mean(0)) / z_a.std(0, unbiased=False).clamp_min(1e-5)
        zb = (z_b - z_b.mean(0)) / z_b.std(0, unbiased=False).clamp_min(1e-5)
        c = za.T @ zb / n
        on = (torch.diagonal(c) - 1).pow(2).sum()
        off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
        spread = torch.nn.functional.normalize(z_a.float(), dim=1).std(0).mean()
    return {"bt_on_diag": on.item(), "bt_off_diag": off.item(), "embedding_std": spread.item()}


class BarlowTwins(nn.Module):
    """Projector + loss: `forward(features_a, features_b)` -> (loss, terms for the log)."""

    def __init__(self, in_features: int, widths: list[int], lambda_: float = DEFAULT_LAMBDA):
        from lightly.loss import BarlowTwinsLoss

        super().__init__()
        if not 0 < lambda_ < 1:
            raise WoofError(f"barlow_lambda must be in (0, 1), not {lambda_}")
        self.projector = projector(in_features, widths)
        self.criterion = BarlowTwinsLoss(lambda_param=lambda_)

    def forward(self, f_a: torch.Tensor, f_b: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        if f_a.shape[0] < 2:
            raise WoofError("Barlow Twins needs at least 2 images per batch (the cross-correlation is over the "
                            "batch); raise batch_size")
        z_a, z_b = self.projector(f_a).float(), self.projector(f_b).float()
        return self.global_loss(z_a, z_b)

    def global_loss(self, z_a: torch.Tensor, z_b: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss over the global batch: under torchrun every process's embeddings are gathered first, so the
        batch normalisation and the cross-correlation see all of them, as the reference's all-reduce of C does.
        (The projector's own BatchNorm stays per process unless sync_bn turns it into SyncBatchNorm on CUDA.)"""
        z_a, z_b = distributed.gather_batch(z_a), distributed.gather_batch(z_b)
        return self.criterion(z_a, z_b), correlation_terms(z_a, z_b)


def two_view_transforms(size: int, spec: dict[str, Any], min_scale: float = 0.08):
    """The reference's two asymmetric augmentation pipelines, normalised like the model's preprocessing."""
    from lightly.transforms import BYOLView1Transform, BYOLView2Transform

    normalize = {"mean": list(spec["mean"]), "std": list(spec["std"])}
    return (BYOLView1Transform(input_size=size, min_scale=min_scale, normalize=normalize),
            BYOLView2Transform(input_size=size, min_scale=min_scale, normalize=normalize))


class TwoViews:
    """(view a, view b, label) of each photo: the input of a Barlow Twins term."""

    def __init__(self, samples, transforms):
        self.samples, (self.view_a, self.view_b) = samples, transforms

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from woof.preprocess import load_image

        image = load_image(self.samples[index].path)
        return self.view_a(image), self.view_b(image), self.samples[index].label


@torch.no_grad()
def knn_top1(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, query_labels: torch.Tensor,
             k: int = 200, temperature: float = 0.1, num_classes: int = 10) -> float:
    """Weighted kNN on L2-normalised features (lightly's knn_predict; k 200, t 0.1 as its benchmarks)."""
    from lightly.utils.benchmarking import knn_predict

    bank = torch.nn.functional.normalize(bank.float(), dim=1)
    queries = torch.nn.functional.normalize(queries.float(), dim=1)
    predicted = knn_predict(queries, bank.T, bank_labels, num_classes, knn_k=min(k, len(bank)),
                            knn_t=temperature)[:, 0]
    return float((predicted == query_labels).float().mean())
