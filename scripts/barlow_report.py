#!/usr/bin/env python
"""The Barlow Twins research table, from the runs scripts/barlow_rows.sh leaves in runs/research/.

Each row: architecture, resolution, data, epochs, image-passes (forward+backward images; two per photo for the
two-view objectives: the unit of an equal budget; a fine-tune adds the pretraining it starts from, and so
does its wall time), wall time, images/s (of the run itself), and val top-1 (one `woof eval` per
run, on the 160 px val) or kNN top-1, with 95 % intervals; pairs at equal budget get an exact McNemar test on
the same val images. Rows that have not run yet say so. Research rows never choose a shipped recipe.

    .venv/bin/python scripts/barlow_report.py [--runs runs/research]
Writes reports/barlow_twins.md and copies each run's card.json, history.csv, knn.json and val predictions (not
its weights) to reports/barlow_twins/<run>/; a row whose run folder is gone (runs/ does not outlive a session)
is read from that copy, so rows finished in different sessions stay in one table.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from training.evaluate import mcnemar_exact, wilson_interval  # noqa: E402
from woof.files import atomic_write_text  # noqa: E402

ROWS = [  # (run folder, what, leak-free?)
    ("scratch-ce-128-5ep", "plain cross-entropy, random init, 5 epochs (the leaderboard's 128 px / 5 epoch row)", True),
    ("scratch-ce-128-10ep", "plain cross-entropy, random init, 10 epochs (the small equal-budget pair)", True),
    ("joint-bt-ce-128-5ep", "joint Barlow Twins + cross-entropy, random init, 5 epochs x 2 views (the small pair)",
     True),
    ("joint-bt-ce-128-5ep-w0.001", "the same, Barlow Twins weight 0.001 (the term ~ the cross-entropy at the "
     "start) instead of 0.1", True),
    ("two-view-ce-128-5ep", "control: the joint loop with the Barlow Twins weight 1e-9, i.e. cross-entropy on the "
     "two Barlow Twins views alone", True),
    ("joint-bt-ce-128-5ep-train-views", "joint, the recipe's own crop-and-flip as the two views, batch 32 photos "
     "x 2 views: 64 images a step, 1,265 steps (scratch-ce-128-10ep: 64 and 1,260)", True),
    ("two-view-ce-128-5ep-train-views", "control of that: the same with the Barlow Twins weight 1e-9 (cross-entropy "
     "on two crops of each photo)", True),
    ("scratch-ce-128", "plain cross-entropy, random init, 50 epochs", True),
    ("random-lite0", "kNN on a randomly initialised network (the floor)", True),
    ("bt-pretrain-96", "Barlow Twins pretraining, random init, 96 px views, 20 epochs: kNN (128 px)", True),
    ("bt-probe-128", "linear probe of the Barlow Twins backbone: breed head only, 5 epochs (128 px)", True),
    ("bt-finetune-128", "Barlow Twins 20 epochs (96 px), then cross-entropy 10 epochs (128 px)", True),
    ("joint-bt-ce-128", "joint Barlow Twins + cross-entropy, random init, 25 epochs", True),
    ("imagenet-ce", "plain fine-tune from ImageNet (training/configs/lite0.yaml), 4 epochs", False),
    ("imagenet-joint", "joint Barlow Twins + cross-entropy from ImageNet, 2 epochs", False),
    ("imagenet-bt-finetune", "Barlow Twins continued from ImageNet 1 epoch (192 px, ImageNet BatchNorm statistics "
     "kept), then the plain fine-tune for 2 epochs", False),
]
PAIRS = [  # (a, b, what the pair compares)
    ("joint-bt-ce-128-5ep", "scratch-ce-128-10ep", "equal budget, 80,640 image-passes each"),
    ("joint-bt-ce-128-5ep-w0.001", "scratch-ce-128-10ep", "equal budget, 80,640 image-passes each"),
    ("two-view-ce-128-5ep", "scratch-ce-128-10ep", "equal budget: what the two views and half the steps cost"),
    ("joint-bt-ce-128-5ep", "two-view-ce-128-5ep", "the same views and steps: what the Barlow Twins term does"),
    ("joint-bt-ce-128-5ep-train-views", "scratch-ce-128-10ep", "equal budget and steps: 80,960 vs 80,640 image-passes"),
    ("joint-bt-ce-128-5ep-train-views", "two-view-ce-128-5ep-train-views",
     "the same views and steps: what the Barlow Twins term does"),
    ("bt-finetune-128", "scratch-ce-128", "equal budget, ~403,000 image-passes each"),
    ("joint-bt-ce-128", "scratch-ce-128", "equal budget, ~403,000 image-passes each"),
    ("bt-finetune-128", "scratch-ce-128-10ep",
     "the same 10 supervised epochs; the Barlow Twins row spends 322,560 more image-passes (not an equal budget)"),
    ("imagenet-joint", "imagenet-ce", "equal budget, from ImageNet (leaky)"),
    ("imagenet-bt-finetune", "imagenet-ce", "equal budget, from ImageNet (leaky)"),
]
LEADERBOARD = "fast.ai Imagewoof leaderboard, random init, val top-1: 128 px 5 epochs 76.61 %, 20 epochs 86.27 %"


KEPT = ("card.json", "history.csv", "knn.json", "report/predictions.csv")


def source(runs: Path, kept: Path, name: str) -> Path:
    """The run folder while it exists, else the copy of it kept in reports/."""
    return runs / name if any((runs / name / f).is_file() for f in KEPT) else kept / name


def keep(run: Path, target: Path) -> None:
    for f in KEPT:
        if (run / f).is_file() and run != target:
            (target / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(run / f, target / f)


def correct_by_file(run: Path) -> dict[str, bool] | None:
    path = run / "report" / "predictions.csv"
    if not path.is_file():
        return None
    with open(path) as f:
        return {r["file"]: r["correct"] == "1" for r in csv.DictReader(f)}


def describe(run: Path) -> dict:
    card = json.loads((run / "card.json").read_text()) if (run / "card.json").is_file() else {}
    knn = json.loads((run / "knn.json").read_text()) if (run / "knn.json").is_file() else None
    training = card.get("training", {})
    recipe = card.get("recipe", {})
    passes, seconds = training.get("image_passes"), training.get("seconds")
    val = card.get("metrics", {}).get("val")
    return {"card": card, "knn": knn, "architecture": card.get("architecture") or (knn or {}).get("model", "?"),
            "size": recipe.get("train_size") or (knn or {}).get("input_size"), "epochs": training.get("epochs"),
            "passes": passes, "seconds": seconds,
            "rate": round(passes / seconds, 1) if passes and seconds else None, "val": val}


def p_text(p: float) -> str:
    return "< 1e-12" if p < 1e-12 else f"= {p:.3g}"


def cell_acc(d: dict) -> str:
    if d["val"]:
        v = d["val"]
        return f"{v['top1']:.2%} ({v['correct']}/{v['total']}, {v['ci95'][0]:.1%}–{v['ci95'][1]:.1%})"
    if d["knn"]:
        k = d["knn"]
        total = int(k["queries"].rsplit(",", 1)[1])
        correct = round(k["top1"] * total)
        low, high = wilson_interval(correct, total)
        return f"kNN {k['top1']:.2%} ({correct}/{total}, {low:.1%}–{high:.1%})"
    return "not run yet"


def subset_cell(m: dict | None) -> str:
    return f"; ImageNet-val subset {m['correct']}/{m['total']} ({m['top1']:.1%})" if m else ""


def zero_shot_row() -> str:
    """The untrained ImageNet Lite0 on the same 160 px val, beside the ImageNet-init rows: from the default
    model's card (`woof eval training/checkpoints/lite0 ... --also ../shared/data/imagewoof2-160 --baseline`)."""
    card = json.loads((ROOT / "training" / "checkpoints" / "lite0" / "card.json").read_text())
    zs = ((card["metrics"].get("other_val_sets") or {}).get("imagewoof2-160") or {}).get("zero_shot")
    if not zs:
        return "| zero-shot | the untrained ImageNet Lite0: training/checkpoints/lite0 has no 160 px zero-shot row |"
    v = zs["val"]
    return (f"| zero-shot | the untrained ImageNet Lite0 reading its 10 breed rows "
            f"(training/checkpoints/lite0/card.json, 224 px) | no (ImageNet weights) | efficientnet_lite0 | – | 0 | "
            f"0 | – | – | {v['top1']:.2%} "
            f"({v['correct']}/{v['total']}, {v['ci95'][0]:.1%}–{v['ci95'][1]:.1%})"
            f"{subset_cell(zs.get('val_imagenet_val_subset'))} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default=str(ROOT / "runs" / "research"))
    p.add_argument("--out", default=str(ROOT / "reports"))
    args = p.parse_args(argv)
    runs, out = Path(args.runs), Path(args.out)
    lines = ["# Barlow Twins: self-supervised pretraining and joint training, at equal image-passes", "",
             "Regenerate: `scripts/barlow_rows.sh && .venv/bin/python scripts/barlow_report.py`. Data: the 160 px "
             "imagewoof2 train split minus the fixed 10 % hold-out (never read), val scored once per run. "
             f"Reference: {LEADERBOARD} (GPUs and larger budgets; ours is a 2-core CPU).", "",
             "| run | what | leak-free | arch | px | epochs | image-passes | wall time | images/s | val top-1 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    kept = out / "barlow_twins"
    machines: dict[str, list[str]] = {}
    for name, what, leak_free in ROWS:
        run = source(runs, kept, name)
        keep(run, kept / name)
        d = describe(run)
        if (d["card"].get("training") or {}).get("hardware"):
            machines.setdefault(d["card"]["training"]["hardware"], []).append(name)
        passes, seconds = d["passes"] or "–", d["seconds"]
        init = (d["card"].get("recipe") or {}).get("init")
        if init and d["passes"]:  # a fine-tune's budget includes the pretraining it starts from
            start_run = source(runs, kept, Path(init).name)
            keep(start_run, kept / Path(init).name)  # the pretraining's card and history, even when not a row itself
            start = describe(start_run)
            if start["passes"]:
                passes = f"{d['passes']} + {start['passes']} pretraining = {d['passes'] + start['passes']}"
                seconds += start["seconds"] or 0
        minutes = f"{seconds / 60:.0f} min" if seconds else "–"
        accuracy = cell_acc(d)
        if not leak_free and d["val"]:  # ~96 % of val are ImageNet train images: the 162 that are not, beside
            accuracy += subset_cell(d["card"]["metrics"].get("val_imagenet_val_subset"))
        lines.append(f"| {name} | {what} | {'yes' if leak_free else 'no (ImageNet init)'} | {d['architecture']} | "
                     f"{d['size'] or '–'} | {d['epochs'] or '–'} | {passes} | {minutes} | "
                     f"{d['rate'] or '–'} | {accuracy} |")
    lines.append(zero_shot_row())
    lines += ["", "Machines (each run's card, `training.hardware`): " + "; ".join(
        f"{cpu}: {', '.join(names)}" for cpu, names in sorted(machines.items())) + "."]
    lines += ["", "Paired tests on the same val images (exact McNemar):", ""]
    for a, b, what in PAIRS:
        ca, cb = correct_by_file(source(runs, kept, a)), correct_by_file(source(runs, kept, b))
        if ca is None or cb is None:
            lines.append(f"- {a} vs {b} ({what}): not run yet")
            continue
        files = sorted(set(ca) & set(cb))
        test = mcnemar_exact(np.array([ca[f] for f in files]), np.array([cb[f] for f in files]))
        lines.append(f"- {a} vs {b} ({what}): {test['only_model_right']} val images right only for {a}, "
                     f"{test['only_zero_shot_right']} only for {b}; exact McNemar p {p_text(test['p_value'])}")
    atomic_write_text(out / "barlow_twins.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
