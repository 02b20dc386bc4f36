#!/usr/bin/env python
"""What each small-data choice of the fine-tuning recipe does, measured on a train hold-out.

Val stays untouched: every variant trains on 90 % of train (stratified, seed 0) and is scored on
the other 10 %. One short epoch each (160 px crops) to fit a 2-core CPU; the zero-shot row is the
bar every variant must clear. Resumable: finished variants are read back from runs/ablation/.
Runs are big and not committed; --keep-measured keeps the figures of rows whose run folder is gone
(as they stand in reports/ablation.csv) instead of training them again.

    .venv/bin/python scripts/ablate_recipe.py [--data PATH] [--epochs 1] [--variants recipe,random_head]
    .venv/bin/python scripts/ablate_recipe.py --full --keep-measured
Writes reports/ablation.md and reports/ablation.csv.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.data import holdout_split, list_samples, resolve_root  # noqa: E402
from training.evaluate import accuracy_entry, fmt_acc, predict_logits  # noqa: E402
from training.models import create_model, default_preprocessing  # noqa: E402
from training.train import TrainConfig, train  # noqa: E402

BASE = dict(model="efficientnet_lite0", holdout=0.1, seed=0, train_size=160, eval_size=224, batch_size=32,
            weight_decay=0.05, warmup_epochs=0.2, label_smoothing=0.1)
VARIANTS = {  # name -> (what changes, settings)
    "recipe": ("ImageNet-row head, frozen BN, lr 1e-4 (the committed recipe)",
               dict(head_init="imagenet", freeze_bn=True, lr=1e-4)),
    "random_head": ("as recipe, but a randomly initialised head",
                    dict(head_init="random", freeze_bn=True, lr=1e-4)),
    "train_bn": ("as recipe, but BatchNorm statistics trained",
                 dict(head_init="imagenet", freeze_bn=False, lr=1e-4)),
    "naive": ("naive: random head, BN trained, lr 1e-3",
              dict(head_init="random", freeze_bn=False, lr=1e-3)),
}
FULL_RECIPE = ROOT / "training" / "configs" / "lite0.yaml"  # the plain recipe
DISTILLED = {  # variant -> (recipe, run folder, what it is)
    "distill": ("lite0_distill.yaml", "lite0-distill", "lite0 1.1.0"),
    "distill_long": ("lite0_distill_long.yaml", "lite0-distill-long", "6 epochs instead of 4"),
    "distill_ensemble": ("lite0_distill_ensemble.yaml", "lite0-distill-ensemble",
                         "as distill_long, teachers lite2 + lite0 1.2.0 averaged"),
    "distill_ensemble_pure": ("lite0_distill_ensemble_pure.yaml", "lite0-distill-ensemble-pure",
                              "as distill_ensemble, alpha 1: the teachers' soft labels only"),
}
ALPHAS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="Imagewoof root (default: $WOOF_DATA_ROOT)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of "
                        + ", ".join(VARIANTS))
    parser.add_argument("--runs", default=str(ROOT / "runs" / "ablation"))
    parser.add_argument("--full", action="store_true",
                        help="also train the committed Lite0 recipe itself on the 90 %% and sweep the WiSE-FT alpha")
    parser.add_argument("--keep-measured", action="store_true",
                        help="a row whose run folder is gone keeps its figures from reports/ablation.csv")
    args = parser.parse_args()
    root = resolve_root(args.data)
    runs = Path(args.runs)
    kept = measured_rows() if args.keep_measured else {}

    _, held = holdout_split(list_samples(root, "train"), BASE["holdout"], BASE["seed"])
    spec = default_preprocessing(BASE["model"], BASE["eval_size"])
    model = create_model(BASE["model"])
    logits, labels = predict_logits(model, held, spec, zero_shot=True)
    rows = [{"variant": "zero_shot", "what": "ImageNet head's 10 breed rows, no training", "epochs": 0,
             **accuracy_entry(int((logits.argmax(1) == labels).sum()), len(labels))}]
    print(f"zero-shot on the hold-out: {fmt_acc(rows[0])}")

    # The full recipe first: its alpha sweep decides the committed models; the variants explain.
    wise_rows = []
    if args.full:
        wise_rows = (kept_or(kept, [f"wise_{a:.1f}" for a in ALPHAS], runs / "lite0-recipe")
                     or full_recipe_and_wise(root, runs, held, spec))
        for variant in DISTILLED:
            wise_rows += (kept_or(kept, distilled_variants(variant), runs / DISTILLED[variant][1])
                          or distilled(root, runs, held, variant))
    for name in filter(None, args.variants.split(",")):
        what, settings = VARIANTS[name]
        out = runs / f"{name}-e{args.epochs}"
        if (row := kept_or(kept, [name], out)):
            rows += row
            continue
        config = TrainConfig.from_dict({**BASE, **settings, "epochs": args.epochs, "name": name})
        if not (out / "model.safetensors").exists():
            train(config, root, out, resume=(out / "last.pt").exists(), progress=False)
        with (out / "history.csv").open() as f:
            last = list(csv.DictReader(f))[-1]
        correct = round(float(last["holdout_acc"]) * len(held))
        rows.append({"variant": name, "what": what, "epochs": args.epochs, **accuracy_entry(correct, len(held)),
                     "train_seconds": last["seconds"]})
        print(f"{name}: {fmt_acc(rows[-1])}")

    rows += wise_rows

    reports = ROOT / "reports"
    reports.mkdir(exist_ok=True)
    with (reports / "ablation.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["variant", "what", "epochs", "top1", "correct", "total", "ci95",
                                               "train_seconds"])
        writer.writeheader()
        writer.writerows(rows)
    lines = ["# Fine-tuning recipe ablation (EfficientNet-Lite0, train hold-out)", "",
             "**160 px, old protocol**: every row here trained and was scored on the 160 px set, and the "
             "distill rows' teachers (lite2 1.0.0, lite0 1.2.0) had trained on all of train, this hold-out "
             "included. Recipes since lite0 1.4.0 are chosen under the 320 px protocol instead "
             "(reports/selection_320.md, docs/training.md).", "",
             f"Train on 90 % of imagewoof2 train ({len(list_samples(root, 'train')) - len(held)} images), score on "
             f"the stratified 10 % hold-out ({len(held)} images, seed 0); val is not used. "
             f"Variants: {args.epochs} epoch(s) of {BASE['train_size']} px crops, evaluated at {BASE['eval_size']} px; "
             "wise_* rows: the full plain Lite0 recipe (4 epochs), its final weights mixed with the zero-shot start; "
             "distill: the same recipe with the Lite2 fine-tune as teacher. "
             f"Command: `.venv/bin/python scripts/ablate_recipe.py{' --full' if args.full else ''}"
             f"{' --keep-measured' if args.keep_measured else ''}`.", "",
             "| variant | what changes | hold-out top-1 (95 % CI) |", "|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['what']} | {fmt_acc(r)} |")
    old = (reports / "ablation.md").read_text() if (reports / "ablation.md").exists() else ""
    note = old[old.index("\nReading it:"):] if "\nReading it:" in old else ""  # the hand-written reading stays
    (reports / "ablation.md").write_text("\n".join(lines) + "\n" + note)
    print(f"wrote {reports / 'ablation.md'}")
    return 0


def full_recipe_and_wise(root, runs, held, spec) -> list[dict]:
    """The committed recipe on the 90 %, then its weights mixed with the zero-shot start."""
    from training.checkpoint import load_model
    from training.wise import mix, zero_shot_state

    out = runs / "lite0-recipe"
    config = TrainConfig.load(FULL_RECIPE, {"holdout": BASE["holdout"], "seed": BASE["seed"], "name": "recipe"})
    if not (out / "model.safetensors").exists():
        train(config, root, out, resume=(out / "last.pt").exists(), progress=False)
    model, card = load_model(out)
    fine_tuned = {k: v.clone() for k, v in model.state_dict().items()}
    start = zero_shot_state(card["architecture"])
    rows = []
    for alpha in ALPHAS:
        model.load_state_dict(fine_tuned)
        mix(model, card["architecture"], alpha, start)
        logits, labels = predict_logits(model, held, spec)
        what = ("plain Lite0 recipe, training/configs/lite0.yaml" if alpha == 1
                else f"WiSE-FT: weights {alpha:.0%} fine-tuned, {1 - alpha:.0%} zero-shot")
        rows.append({"variant": f"wise_{alpha:.1f}", "what": f"{what} ({config.epochs} epochs, "
                     f"{config.train_size} px)", "epochs": config.epochs,
                     **accuracy_entry(int((logits.argmax(1) == labels).sum()), len(labels))})
        print(f"{rows[-1]['variant']}: {fmt_acc(rows[-1])}")
    return rows


def distilled_variants(variant: str) -> list[str]:
    """A recipe with a moving average gives two rows: its last weights and the averaged ones."""
    config = TrainConfig.load(ROOT / "training" / "configs" / DISTILLED[variant][0])
    return [variant, f"{variant}_ema"] if config.ema_decay else [variant]


def distilled(root, runs, held, variant: str) -> list[dict]:
    """The plain recipe plus distillation from the trained teachers (which trained on all of train, hold-out
    included: the student never sees the hold-out, but the teacher's soft labels come from a model that did)."""
    recipe, folder, what = DISTILLED[variant]
    out = runs / folder
    config = TrainConfig.load(ROOT / "training" / "configs" / recipe,
                              {"holdout": BASE["holdout"], "seed": BASE["seed"], "name": folder})
    if not (out / "model.safetensors").exists():
        train(config, root, out, resume=(out / "last.pt").exists(), progress=False)
    with (out / "history.csv").open() as f:
        history = list(csv.DictReader(f))
    teachers = " + ".join(Path(t).name for t in config.teacher_names())
    whats = [f"plain recipe + distillation from {teachers} (alpha {config.distill_alpha}, "
             f"T {config.distill_temperature:g}, {config.epochs} epochs; training/configs/{recipe}, {what}",
             f"{variant}'s moving average of the weights (decay {config.ema_decay}), the weights it saves; "
             "the same run, scored on the same images"]
    rows = []
    for name, column, text in list(zip([variant, f"{variant}_ema"], ["holdout_acc", "holdout_acc_ema"], whats))[
            :len(distilled_variants(variant))]:
        per_epoch = ", ".join(str(round(float(h[column]) * len(held))) for h in history)
        rows.append({"variant": name, "what": f"{text}; correct per epoch: {per_epoch}{')' if name == variant else ''}",
                     "epochs": config.epochs, "train_seconds": round(sum(float(h["seconds"]) for h in history), 1),
                     **accuracy_entry(round(float(history[-1][column]) * len(held)), len(held))})
        print(f"{name}: {fmt_acc(rows[-1])}")
    return rows


def measured_rows() -> dict[str, dict]:
    """Rows of the last written reports/ablation.csv, by variant, in the shape main() builds."""
    path = ROOT / "reports" / "ablation.csv"
    if not path.exists():
        return {}
    with path.open() as f:
        return {r["variant"]: {**r, **accuracy_entry(int(r["correct"]), int(r["total"]))} for r in csv.DictReader(f)}


def kept_or(kept: dict[str, dict], variants: list[str], run: Path) -> list[dict]:
    """The kept rows of these variants, if their run folder is gone and all of them were measured before."""
    if run.exists() or not all(v in kept for v in variants):
        return []
    print(f"{run.name}: run folder gone, keeping the measured figures of {', '.join(variants)}")
    return [kept[v] for v in variants]


if __name__ == "__main__":
    sys.exit(main())
