#!/usr/bin/env python
"""Which test-time preprocessing suits a model trained on 192 px crops, measured on the train hold-out.

Imagewoof2-160 images are 160 px on the shorter side, so every eval size upsamples; the question is
how much to upsample (input size, "FixRes": random-resized-crop training sees objects larger than a
centre crop of the same size shows them) and how much border to cut (crop_pct = input / resize).
Scores the hold-out-trained model (the 10 % hold-out it never saw, seed 0) at each setting; val is
not used. Run after the recipe's hold-out run (scripts/ablate_recipe.py --full):

    .venv/bin/python scripts/ablate_eval_size.py [--run runs/ablation/lite0-distill-long]
Writes reports/eval_size.md and reports/eval_size.csv.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training import checkpoint  # noqa: E402
from training.data import holdout_split, list_samples, resolve_root  # noqa: E402
from training.evaluate import accuracy_entry, fmt_acc, predict_logits  # noqa: E402
from woof.preprocess import default_spec  # noqa: E402

SIZES = (192, 224, 256, 288)
CROP_PCTS = (0.875, 1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="Imagewoof root (default: $WOOF_DATA_ROOT)")
    parser.add_argument("--run", default=str(ROOT / "runs" / "ablation" / "lite0-distill-long"),
                        help="a model folder trained with --holdout 0.1 (seed 0)")
    parser.add_argument("--out", default=str(ROOT / "reports" / "eval_size"), help="writes OUT.md and OUT.csv")
    args = parser.parse_args()

    run = Path(args.run).resolve()
    shown = run.relative_to(ROOT) if run.is_relative_to(ROOT) else run  # paths in the report as a user types them
    model, card = checkpoint.load_model(run)
    recipe = card.get("recipe", {})
    holdout, seed = recipe.get("holdout", 0), recipe.get("seed", 0)
    if not holdout:
        print(f"error: {shown} was trained on all of train (no hold-out); its hold-out score would be "
              "a training score", file=sys.stderr)
        return 2
    _, held = holdout_split(list_samples(resolve_root(args.data), "train"), holdout, seed)
    base = card["preprocessing"]
    rows = []
    for size in SIZES:
        for crop_pct in CROP_PCTS:
            spec = default_spec(size, crop_pct, base["mean"], base["std"], base["interpolation"])
            logits, labels = predict_logits(model, held, spec, progress=False)
            entry = accuracy_entry(int((logits.argmax(1) == labels).sum()), len(labels))
            current = spec["input_size"] == base["input_size"] and spec["resize"] == base["resize"]
            rows.append({"input_size": size, "resize": spec["resize"], "crop_pct": crop_pct,
                         "current": current, **entry})
            print(f"{size} px, resize {spec['resize']}{' (current)' if current else ''}: {fmt_acc(entry)}",
                  flush=True)

    out = Path(args.out)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["input_size", "resize", "crop_pct", "current", "correct", "total",
                                               "top1"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in writer.fieldnames} for r in rows)
    lines = [f"# Test-time preprocessing on the train hold-out ({card['architecture']}, "
             f"trained at {recipe.get('train_size')} px)", "",
             f"Model: `{shown}` (`{card.get('command', '')}`, trained on "
             f"{1 - holdout:.0%} of train); scored on the {len(held)}-image hold-out (seed {seed}); val not used. "
             f"Command: `.venv/bin/python scripts/ablate_eval_size.py --run {shown}`.", "",
             "| input size | resize (shorter side) | crop_pct | hold-out top-1 (95 % CI) |", "|---|---|---|---|"]
    lines += [f"| {r['input_size']}{' (current)' if r['current'] else ''} | {r['resize']} | {r['crop_pct']} | "
              f"{fmt_acc(r)} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
