#!/usr/bin/env python
"""The results table: every committed model and its zero-shot baseline, true accuracy and CPU speed.

Accuracy comes from each model's card (written by `woof eval --baseline --update-card`); speed is
measured here, in-process PyTorch on this machine's CPU: images/s at batch 32 and the median
latency of one image. Run it on an idle machine, or the speed column lies.

    .venv/bin/python scripts/results_table.py [--no-speed]
Writes reports/results.md and reports/results.csv.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.checkpoint import hardware, load_model  # noqa: E402
from training.evaluate import fmt_acc  # noqa: E402
from training.recipe import teacher_names  # noqa: E402
from woof.card import read_card, trained_on  # noqa: E402

CHECKPOINTS = ROOT / "training" / "checkpoints"


def measure_speed(model, size: int, batch: int = 32, seconds: float = 8.0) -> tuple[float, float]:
    """(images/s at `batch`, median ms for one image), channels_last, inference mode."""
    import torch

    model = model.eval().to(memory_format=torch.channels_last)
    with torch.inference_mode():
        x = torch.randn(batch, 3, size, size).to(memory_format=torch.channels_last)
        model(x)  # warm-up
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model(x)
            n += batch
        throughput = n / (time.perf_counter() - start)
        one = torch.randn(1, 3, size, size).to(memory_format=torch.channels_last)
        times = []
        for _ in range(30):
            t = time.perf_counter()
            model(one)
            times.append((time.perf_counter() - t) * 1000)
    return throughput, statistics.median(times)


SETS = ("imagewoof2-320", "imagewoof2-160")  # primary first: the resolution people send


def by_set(metrics: dict) -> dict[str, dict]:
    """A card's (or a previous version's) figures per val set; cards before 1.4.0 name none: 160 px."""
    out = {metrics.get("val_set", "imagewoof2-160"): metrics}
    out.update(metrics.get("other_val_sets", {}))
    return out


def zero_shot_figures(metrics: dict) -> dict:
    return {name: {**m["zero_shot"], "mcnemar_vs_zero_shot": None} for name, m in by_set(metrics).items()
            if "zero_shot" in m}


def cell(figures: dict, name: str, key: str) -> str:
    m = figures.get(name)
    return fmt_acc(m[key]) if m and key in m else "not measured"


def p_cell(figures: dict, name: str) -> str:
    test = (figures.get(name) or {}).get("mcnemar_vs_zero_shot")
    if not test:
        return ""
    return f"{test['val']['p_value']:.2g} / {test['val_imagenet_val_subset']['p_value']:.2g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-speed", action="store_true", help="skip the speed measurement")
    args = parser.parse_args()

    rows = []
    for model_dir in sorted(p for p in CHECKPOINTS.iterdir() if (p / "card.json").exists()):
        card = read_card(model_dir)
        metrics = card.get("metrics")
        if not metrics:
            print(f"skipping {model_dir.name}: no metrics in its card yet (run woof eval --update-card)")
            continue
        size = card["preprocessing"]["input_size"]
        speed = ("", "")
        if not args.no_speed:
            model, _ = load_model(model_dir)
            speed = tuple(round(v, 1) for v in measure_speed(model, size))
        common = {"params_m": round(card["parameters"] / 1e6, 2), "input_px": size, "images_per_s": speed[0],
                  "latency_ms": speed[1]}
        if "zero_shot" in metrics:
            rows.append({"model": f"{card['architecture']} zero-shot", **common, "data": "none", "training": "none",
                         "figures": zero_shot_figures(metrics)})
        minutes = card.get("training", {}).get("seconds", 0) / 60
        replaced = sorted(card.get("previous_versions", []),  # what a retrained model replaced, oldest first
                          key=lambda old: tuple(int(part) for part in old["version"].split(".")))
        for old in replaced:
            recipe = old["recipe"]  # old cards: a description; newer: the command, of which the recipe file says most
            recipe = recipe.split("--config ")[-1].split(" ")[0] if "--config" in recipe else recipe
            rows.append({"model": f"{card['name']} {old['version']} ({card['architecture']}, {recipe})", **common,
                         "data": old.get("data", "imagewoof2-160"), "training": old.get("training", ""),
                         "figures": by_set(old)})
        wise = card.get("wise_ft")
        teachers = teacher_names(card.get("recipe", {}).get("teacher"))
        label = (f"WiSE-FT alpha {wise['alpha']}" if wise
                 else f"distilled from {' + '.join(Path(t).name for t in teachers)}" if teachers else "fine-tune")
        rows.append({"model": f"{card['name']} {card['version']} ({card['architecture']} {label})", **common,
                     "data": trained_on(card),
                     "training": f"{card['recipe']['epochs']} epochs, {minutes:.0f} min"
                                 + (" + weight mix" if wise else ""),
                     "figures": by_set(metrics)})
        print(f"{rows[-1]['model']}: " + "; ".join(f"{n} {cell(rows[-1]['figures'], n, 'val')}" for n in SETS))

    reports = ROOT / "reports"
    reports.mkdir(exist_ok=True)
    with (reports / "results.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        header = ["model", "params_m", "input_px", "trained_on", "training"]
        for name in SETS:
            header += [f"{name}_{k}" for k in ("val_top1", "val_correct", "subset_top1", "subset_correct",
                                                "p_vs_zero_shot_val", "p_vs_zero_shot_subset")]
        writer.writerow(header + ["images_per_s_b32", "latency_ms_b1"])
        for r in rows:
            line = [r["model"], r["params_m"], r["input_px"], r["data"], r["training"]]
            for name in SETS:
                m = r["figures"].get(name) or {}
                test = m.get("mcnemar_vs_zero_shot") or {}
                line += [m.get("val", {}).get("top1", ""), m.get("val", {}).get("correct", ""),
                         m.get("val_imagenet_val_subset", {}).get("top1", ""),
                         m.get("val_imagenet_val_subset", {}).get("correct", ""),
                         test.get("val", {}).get("p_value", ""),
                         test.get("val_imagenet_val_subset", {}).get("p_value", "")]
            writer.writerow(line + [r["images_per_s"], r["latency_ms"]])
    lines = ["# Results", "",
             "Top-1 on the imagewoof2 val set (3,929 photos) as the official **320 px** copy has them (the primary "
             "figure: closest to what people send) and as the **160 px** copy has them (the same photos, small), "
             "each on full val and on its 162 photos that come from ImageNet's own val set (the other 96 % are "
             "ImageNet *train* images, seen by every ImageNet-pretrained model, zero-shot included: the subset is "
             "the fair comparison, but one photo there is 0.6 pt). 95 % Wilson intervals. p: exact McNemar test "
             "of the model against the zero-shot row on the same photos (full val / subset). Speed: in-process "
             "PyTorch eager, channels_last, on " + hardware() + ".", "",
             "| model | params (M) | input | trained on | training | 320 px full val | 320 px subset | p (320) "
             "| 160 px full val | 160 px subset | p (160) | images/s (batch 32) | ms / image (batch 1) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = r["figures"]
        lines.append(f"| {r['model']} | {r['params_m']} | {r['input_px']} px | {r['data']} | {r['training']} "
                     + "".join(f"| {cell(f, n, 'val')} | {cell(f, n, 'val_imagenet_val_subset')} | {p_cell(f, n)} "
                               for n in SETS)
                     + f"| {r['images_per_s']} | {r['latency_ms']} |")
    lines += ["", "Regenerate: `scripts/train_models.sh` (train, `woof promote`, `woof eval --baseline --also ... "
              "--update-card`), then `.venv/bin/python scripts/results_table.py` on an idle machine.", ""]
    (reports / "results.md").write_text("\n".join(lines))
    print(f"wrote {reports / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
