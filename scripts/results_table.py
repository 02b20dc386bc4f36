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

from training.card import hardware, load_model, read_card  # noqa: E402
from training.evaluate import fmt_acc  # noqa: E402
from training.train import teacher_names  # noqa: E402

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
        common = {"params_m": round(card["parameters"] / 1e6, 2), "input_px": size}
        if "zero_shot" in metrics:
            rows.append({"model": f"{card['architecture']} zero-shot", **common, "training": "none",
                         "val": metrics["zero_shot"]["val"], "subset": metrics["zero_shot"]["val_imagenet_val_subset"],
                         "images_per_s": speed[0], "latency_ms": speed[1]})
        minutes = card.get("training", {}).get("seconds", 0) / 60
        wise = card.get("wise_ft")
        if wise and wise.get("source_metrics"):
            source = wise["source_metrics"]
            rows.append({"model": f"{card['name']} {wise['source_version']} ({card['architecture']} fine-tune)",
                         **common, "training": f"{card['recipe']['epochs']} epochs, {minutes:.0f} min",
                         "val": source["val"], "subset": source["val_imagenet_val_subset"],
                         "images_per_s": speed[0], "latency_ms": speed[1]})
        replaced = sorted(card.get("previous_versions", []),  # what a retrained model replaced, oldest first
                          key=lambda old: tuple(int(part) for part in old["version"].split(".")))
        for old in replaced:
            rows.append({"model": f"{card['name']} {old['version']} ({card['architecture']} fine-tune, "
                                  f"{old['recipe']})", **common, "training": old.get("training", ""),
                         "val": old["val"], "subset": old["val_imagenet_val_subset"],
                         "images_per_s": speed[0], "latency_ms": speed[1]})
        teachers = teacher_names(card.get("recipe", {}).get("teacher"))
        label = (f"WiSE-FT alpha {wise['alpha']}" if wise
                 else f"distilled from {' + '.join(Path(t).name for t in teachers)}" if teachers else "fine-tune")
        rows.append({"model": f"{card['name']} {card['version']} ({card['architecture']} {label})", **common,
                     "training": f"{card['recipe']['epochs']} epochs, {minutes:.0f} min"
                                 + (" + weight mix" if wise else ""),
                     "val": metrics["val"], "subset": metrics["val_imagenet_val_subset"],
                     "images_per_s": speed[0], "latency_ms": speed[1]})
        print(f"{rows[-1]['model']}: {fmt_acc(metrics['val'])}, {speed[0]} img/s")

    reports = ROOT / "reports"
    reports.mkdir(exist_ok=True)
    with (reports / "results.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "params_m", "input_px", "training", "val_top1", "val_ci_low", "val_ci_high",
                         "subset_top1", "subset_ci_low", "subset_ci_high", "images_per_s_b32", "latency_ms_b1"])
        for r in rows:
            writer.writerow([r["model"], r["params_m"], r["input_px"], r["training"], r["val"]["top1"],
                             *r["val"]["ci95"], r["subset"]["top1"], *r["subset"]["ci95"], r["images_per_s"],
                             r["latency_ms"]])
    lines = ["# Results", "",
             "Top-1 on the full imagewoof2 val set (3,929 images) and on its 162 images that come from "
             "ImageNet's own val set (the other 96 % are ImageNet *train* images, seen by every "
             "ImageNet-pretrained model). 95 % Wilson intervals. Speed: in-process PyTorch eager, "
             "channels_last, on " + hardware() + ".", "",
             "| model | params (M) | input | training | top-1 full val | top-1 ImageNet-val subset "
             "| images/s (batch 32) | ms / image (batch 1) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params_m']} | {r['input_px']} px | {r['training']} | {fmt_acc(r['val'])} "
                     f"| {fmt_acc(r['subset'])} | {r['images_per_s']} | {r['latency_ms']} |")
    lines += ["", "Regenerate: `scripts/train_models.sh` (train + `woof eval --baseline --update-card`), then "
              "`.venv/bin/python scripts/results_table.py` on an idle machine.", ""]
    (reports / "results.md").write_text("\n".join(lines))
    print(f"wrote {reports / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
