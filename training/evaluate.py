"""`woof eval`: accuracy on val and on its ImageNet-val-origin subset, per-class metrics, plots.

About 96 % of Imagewoof val images are ImageNet *train* images, which any ImageNet-pretrained
model has seen; only the 162 files named ILSVRC2012_val_* come from ImageNet's own val set.
Every accuracy is therefore reported twice, with a 95 % Wilson confidence interval.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from woof.breeds import BREEDS, WNIDS
from woof.files import atomic_path, atomic_write_json, atomic_write_text
from woof.preprocess import load_image, softmax

from .data import ImageDataset, data_description, list_samples, subset_per_class
from .transforms import eval_transform


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    if total == 0:
        return (0.0, 0.0)
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def accuracy_entry(correct: int, total: int) -> dict[str, Any]:
    low, high = wilson_interval(correct, total)
    return {"top1": round(correct / total, 4) if total else None, "correct": int(correct), "total": int(total),
            "ci95": [round(low, 4), round(high, 4)]}


def mcnemar_exact(model_right: np.ndarray, other_right: np.ndarray) -> dict[str, Any]:
    """Exact (binomial) McNemar test of two classifiers on the same images: only the images where
    exactly one of them is right count; two-sided p-value for "they are equally good"."""
    model_right, other_right = np.asarray(model_right, bool), np.asarray(other_right, bool)
    only_model = int((model_right & ~other_right).sum())
    only_other = int((~model_right & other_right).sum())
    n = only_model + only_other
    tail = sum(math.comb(n, i) for i in range(min(only_model, only_other) + 1))
    p = min(1.0, 2 * tail / 2**n) if n else 1.0
    return {"only_model_right": only_model, "only_zero_shot_right": only_other, "p_value": round(p, 4)}


def fmt_mcnemar(test: dict[str, Any]) -> str:
    return (f"{test['only_model_right']} images right only for the model, {test['only_zero_shot_right']} only for "
            f"zero-shot, exact McNemar p = {test['p_value']:.3g}")


def _run_over(model, samples, spec, batch_size: int, workers: int, progress: bool, device, fn, desc: str):
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    device = device or torch.device("cpu")
    loader = DataLoader(ImageDataset(samples, eval_transform(spec)), batch_size=batch_size,
                        num_workers=workers)
    was_training = model.training
    model.eval()
    outputs, labels = [], []
    with torch.inference_mode():
        for images, y in tqdm(loader, desc=desc, disable=not progress, unit="batch"):
            outputs.append(fn(images.to(device, memory_format=torch.channels_last)).float().cpu())
            labels.append(y)
    model.train(was_training)
    return torch.cat(outputs), torch.cat(labels)


def predict_logits(model, samples, spec, batch_size: int = 64, workers: int = 2, progress: bool = True,
                   device=None, zero_shot: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N x 10) and labels (N) for samples, through the shared preprocessing."""
    logits, labels = _run_over(model, samples, spec, batch_size, workers, progress, device,
                               model.zero_shot if zero_shot else model, "evaluating")
    return logits.numpy(), labels.numpy()


def predict_features(model, samples, spec, batch_size: int = 64, workers: int = 2, progress: bool = True,
                     device=None):
    """Backbone features (N x D tensor) and labels (N tensor): the input of kNN and linear probes."""
    return _run_over(model, samples, spec, batch_size, workers, progress, device, model.features, "features")


def compute_metrics(logits: np.ndarray, labels: np.ndarray, imagenet_val_mask: np.ndarray) -> dict[str, Any]:
    pred = logits.argmax(1)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    hit = pred == labels
    n = len(WNIDS)
    confusion = np.zeros((n, n), dtype=int)
    np.add.at(confusion, (labels, pred), 1)
    per_class = []
    for i, wnid in enumerate(WNIDS):
        tp = confusion[i, i]
        precision = tp / confusion[:, i].sum() if confusion[:, i].sum() else 0.0
        recall = tp / confusion[i].sum() if confusion[i].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class.append({"wnid": wnid, "breed": BREEDS[wnid], "precision": round(float(precision), 4),
                          "recall": round(float(recall), 4), "f1": round(float(f1), 4),
                          "support": int(confusion[i].sum())})
    return {
        "val": accuracy_entry(int(hit.sum()), len(hit)),
        "val_imagenet_val_subset": accuracy_entry(int(hit[imagenet_val_mask].sum()), int(imagenet_val_mask.sum())),
        "top5": round(float((top5 == labels[:, None]).any(1).mean()), 4),
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


def plot_confusion(confusion: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [BREEDS[w] for w in WNIDS]
    fig, ax = plt.subplots(figsize=(8.5, 7.5))
    normalised = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            if confusion[i, j]:
                ax.text(j, i, confusion[i, j], ha="center", va="center", fontsize=8,
                        color="white" if normalised[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def plot_gallery(samples, logits: np.ndarray, labels: np.ndarray, path: Path, limit: int = 24) -> int:
    """The most confident mistakes, with true and predicted breed. Returns how many were drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs = softmax(logits)
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != labels)
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]])][:limit]
    cols = 6
    rows = max(1, math.ceil(len(wrong) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 3.0), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        ax.imshow(load_image(samples[i].path))
        ax.set_title(f"true: {BREEDS[WNIDS[labels[i]]]}\npred: {BREEDS[WNIDS[pred[i]]]} "
                     f"{probs[i, pred[i]]:.0%}", fontsize=8)
    if not len(wrong):
        axes[0, 0].text(0.5, 0.5, "no misclassified images", ha="center")
    fig.suptitle(f"Most confident mistakes ({len(wrong)} shown)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return len(wrong)


def write_report(out_dir: Path, title: str, metrics: dict[str, Any], samples, logits, labels) -> dict[str, Path]:
    """metrics.json, predictions.csv, report.md, confusion_matrix.png, misclassified.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in
             ("metrics.json", "predictions.csv", "report.md", "confusion_matrix.png", "misclassified.png")}
    atomic_write_json(paths["metrics.json"], metrics)
    pred = logits.argmax(1)
    lines = ["file,true_wnid,pred_wnid,confidence,correct"]

    probs = softmax(logits)
    for s, y, p, pr in zip(samples, labels, pred, probs):
        lines.append(f"{s.path.parent.parent.name}/{s.path.parent.name}/{s.path.name},{WNIDS[y]},{WNIDS[p]},"
                     f"{pr[p]:.4f},{int(y == p)}")
    atomic_write_text(paths["predictions.csv"], "\n".join(lines) + "\n")
    plot_confusion(np.array(metrics["confusion"]), paths["confusion_matrix.png"], title)
    plot_gallery(samples, logits, labels, paths["misclassified.png"])
    atomic_write_text(paths["report.md"], markdown_report(title, metrics))
    return paths


def fmt_acc(entry: dict[str, Any]) -> str:
    if not entry["total"]:
        return "n/a (no images)"
    lo, hi = entry["ci95"]
    return f"{entry['top1']:.2%} ({entry['correct']}/{entry['total']}, 95% CI {lo:.1%}–{hi:.1%})"


def markdown_report(title: str, metrics: dict[str, Any]) -> str:
    lines = [f"# {title}", "",
             f"- top-1, full val: **{fmt_acc(metrics['val'])}**",
             f"- top-1, the ImageNet-val-origin subset: **{fmt_acc(metrics['val_imagenet_val_subset'])}**",
             f"- top-5, full val: {metrics['top5']:.2%}", ""]
    if "zero_shot" in metrics:
        zs = metrics["zero_shot"]
        lines += [f"- zero-shot baseline (ImageNet head, no training): {fmt_acc(zs['val'])}; "
                  f"subset {fmt_acc(zs['val_imagenet_val_subset'])}", ""]
    if "mcnemar_vs_zero_shot" in metrics:
        test = metrics["mcnemar_vs_zero_shot"]
        lines += [f"- against zero-shot, full val: {fmt_mcnemar(test['val'])}",
                  f"- against zero-shot, subset: {fmt_mcnemar(test['val_imagenet_val_subset'])}", ""]
    lines += ["| breed | wnid | precision | recall | F1 | images |", "|---|---|---|---|---|---|"]
    for c in metrics["per_class"]:
        lines.append(f"| {c['breed']} | {c['wnid']} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} "
                     f"| {c['support']} |")
    lines += ["", "![confusion matrix](confusion_matrix.png)", "", "![misclassified](misclassified.png)", ""]
    return "\n".join(lines)


CARD_KEYS = ("val", "val_imagenet_val_subset", "top5", "zero_shot", "mcnemar_vs_zero_shot", "val_set")


def evaluate_val(root: Path, model, spec: dict[str, Any], zero_shot_model=None, limit_per_class: int | None = None,
                 **run) -> tuple[dict[str, Any], list, np.ndarray, np.ndarray]:
    """Metrics of `model` on one copy of val (None: score only `zero_shot_model`'s zero-shot head); with
    `zero_shot_model`, its zero-shot row and the paired test against it on the same images."""

    samples = list_samples(root, "val")
    if limit_per_class:
        samples = subset_per_class(samples, limit_per_class)
    mask = np.array([s.from_imagenet_val for s in samples], dtype=bool)
    zs_logits = None
    if zero_shot_model is not None:
        zs_logits, labels = predict_logits(zero_shot_model, samples, spec, zero_shot=True, **run)
    if model is None:
        logits = zs_logits
    else:
        logits, labels = predict_logits(model, samples, spec, **run)
    metrics = compute_metrics(logits, labels, mask)
    if model is not None and zs_logits is not None:
        zs = compute_metrics(zs_logits, labels, mask)
        metrics["zero_shot"] = {k: zs[k] for k in ("val", "val_imagenet_val_subset", "top5")}
        hit, zs_hit = logits.argmax(1) == labels, zs_logits.argmax(1) == labels
        metrics["mcnemar_vs_zero_shot"] = {"val": mcnemar_exact(hit, zs_hit),
                                           "val_imagenet_val_subset": mcnemar_exact(hit[mask], zs_hit[mask])}
    metrics["val_set"] = data_description(root)["dataset"]
    metrics["images"] = len(samples)
    metrics["preprocessing"] = spec
    return metrics, samples, logits, labels


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    lines = [f"  {metrics['val_set']} full val:    {fmt_acc(metrics['val'])}",
             f"  {metrics['val_set']} ImageNet-val subset: {fmt_acc(metrics['val_imagenet_val_subset'])}",
             f"  top-5: {metrics['top5']:.2%}"]
    if "zero_shot" in metrics:
        zs = metrics["zero_shot"]
        lines.append(f"  zero-shot baseline:  {fmt_acc(zs['val'])}; subset {fmt_acc(zs['val_imagenet_val_subset'])}")
        test = metrics["mcnemar_vs_zero_shot"]
        lines.append(f"  vs zero-shot, full val: {fmt_mcnemar(test['val'])}")
        lines.append(f"  vs zero-shot, subset:   {fmt_mcnemar(test['val_imagenet_val_subset'])}")
    return lines


def card_metrics(per_set: list[dict[str, Any]]) -> dict[str, Any]:
    """A card's `metrics`: the first val set's figures at the top (the primary), the others under
    `other_val_sets` by name."""
    first, *others = per_set
    out = {k: first[k] for k in CARD_KEYS if k in first}
    out["per_class_f1"] = {c["breed"]: c["f1"] for c in first["per_class"]}
    if others:
        out["other_val_sets"] = {m["val_set"]: {k: m[k] for k in CARD_KEYS if k in m and k != "val_set"}
                                 for m in others}
    return out
