#!/usr/bin/env python
"""Choose a recipe on the fixed train hold-out, at both resolutions people send (the 320 px protocol).

Every candidate trains on the same 90 % of imagewoof2 train (stratified, `holdout_seed` 0 in its card) and
nothing it learnt from (teachers included) saw the other 10 %. Each candidate is scored on those 902
hold-out files twice: as the 320 px set has them and as the 160 px set has them (the same photos,
smaller), beside the zero-shot model at the same preprocessing, with an exact McNemar test against it.
`--wise` adds weight mixes of a candidate with its zero-shot start (WiSE-FT) at the given alphas.

The rule (fixed before any figure was seen): a candidate qualifies if it is at least zero-shot on the
hold-out at each resolution; among those, the most hold-out images right at 320 + 160 px wins. Val is
not read here.

    .venv/bin/python scripts/select_320.py runs/lite0-320 [more run folders] --wise 0.5,0.7,0.9
        [--data data/imagewoof2-320] [--also ../shared/data/imagewoof2-160]
Writes reports/selection_320.md and reports/selection_320.csv. Rows whose run folder is gone keep their
figures from the CSV (runs/ does not survive between sessions); the others are measured again.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.checkpoint import load_model  # noqa: E402
from training.data import holdout_split, list_samples, same_files  # noqa: E402
from training.evaluate import accuracy_entry, fmt_acc, mcnemar_exact, predict_logits  # noqa: E402
from training.models import create_model  # noqa: E402
from training.wise import mix, zero_shot_state  # noqa: E402
from woof.card import read_card  # noqa: E402

CSV = ROOT / "reports" / "selection_320.csv"
MD = ROOT / "reports" / "selection_320.md"
FIELDS = ["row", "architecture", "what", "correct_320", "correct_160", "total", "p_320", "p_160", "train_seconds"]


EARLIER = " (earlier run)"  # rows from a previous training of a run folder that has been retrained since


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="trained run folders (card.json + model.safetensors)")
    parser.add_argument("--data", default=str(ROOT / "data" / "imagewoof2-320"), help="the 320 px Imagewoof")
    parser.add_argument("--also", default=str(ROOT.parent / "shared" / "data" / "imagewoof2-160"),
                        help="the 160 px Imagewoof (the same files, smaller)")
    parser.add_argument("--wise", default="", help="comma-separated WiSE-FT alphas to try on each run")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    alphas = [float(a) for a in args.wise.split(",") if a.strip()]

    rows = {r["row"]: r for r in read_rows()}
    for run in map(Path, args.runs):
        card = read_card(run)
        data = card.get("data", {})
        if not data.get("holdout_images") or data.get("holdout_seed") != 0 or data.get("holdout_fraction") != 0.1:
            raise SystemExit(f"{run} did not keep the fixed hold-out (holdout 0.1, holdout_seed 0) out of training")
        arch = card["architecture"]
        spec = card["preprocessing"]
        held = holdout_split(list_samples(Path(args.data), "train"), 0.1, 0)[1]
        sets = {"320": held, "160": same_files(held, Path(args.also))}

        def score(model, zero_shot=False, sets=sets, spec=spec):
            out = {}
            for name, samples in sets.items():
                logits, labels = predict_logits(model, samples, spec, batch_size=args.batch_size, zero_shot=zero_shot)
                out[name] = logits.argmax(1) == labels
            return out

        for key in [k for k in rows if k.startswith(f"{run.name}_wise_") and not k.endswith(EARLIER)]:
            # a mix of an earlier training of this run's name: keep its figures, marked, not as this run's
            rows[key + EARLIER] = {**rows.pop(key), "row": key + EARLIER}
        zs_key = f"zero_shot_{arch}_{spec['input_size']}"
        zs_hits = score(create_model(arch, pretrained="imagenet"), zero_shot=True)
        rows[zs_key] = make_row(zs_key, arch, f"{arch} ImageNet head's 10 breed rows, no training, "
                                f"{spec['input_size']} px", zs_hits, None)
        model, _ = load_model(run)
        fine_tuned = {k: v.clone() for k, v in model.state_dict().items()}
        seconds = card.get("training", {}).get("seconds", "")
        recipe = card.get("command") or ""
        rows[run.name] = make_row(run.name, arch, f"`{recipe}`", score(model), zs_hits, seconds)
        if alphas:
            start = zero_shot_state(arch)
            for alpha in alphas:
                model.load_state_dict(fine_tuned)
                mix(model, arch, alpha, start)
                key = f"{run.name}_wise_{alpha:g}"
                rows[key] = make_row(key, arch, f"{run.name} weights mixed with the zero-shot start, alpha {alpha:g} "
                                     f"(WiSE-FT: {alpha:.0%} fine-tuned)", score(model), zs_hits, seconds)
        for key in [k for k in rows if k.startswith(run.name)]:
            print(f"{key}: 320 px {rows[key]['correct_320']}/{rows[key]['total']}, "
                  f"160 px {rows[key]['correct_160']}/{rows[key]['total']}")
    write(list(rows.values()))
    return 0


def make_row(key, arch, what, hits, zs_hits, seconds=""):
    row = {"row": key, "architecture": arch, "what": what, "total": len(hits["320"]), "train_seconds": seconds}
    for name in ("320", "160"):
        row[f"correct_{name}"] = int(hits[name].sum())
        row[f"p_{name}"] = mcnemar_exact(hits[name], zs_hits[name])["p_value"] if zs_hits else ""
    return row


def read_rows() -> list[dict]:
    if not CSV.exists():
        return []
    with CSV.open() as f:
        return list(csv.DictReader(f))


def choose(rows: list[dict]) -> dict[str, str]:
    """Per architecture: the qualifying row (>= zero-shot at both sizes) with most images right at 320 + 160."""
    chosen = {}
    for arch in sorted({r["architecture"] for r in rows}):
        zs = [r for r in rows if r["architecture"] == arch and r["row"].startswith("zero_shot_")]
        if not zs:
            continue
        floor = {n: int(zs[0][f"correct_{n}"]) for n in ("320", "160")}
        ok = [r for r in rows if r["architecture"] == arch and not r["row"].startswith("zero_shot_")
              and not r["row"].endswith(EARLIER)
              and all(int(r[f"correct_{n}"]) >= floor[n] for n in ("320", "160"))]
        if ok:
            chosen[arch] = max(ok, key=lambda r: int(r["correct_320"]) + int(r["correct_160"]))["row"]
    return chosen


def choose_candidate(rows: list[dict], arch: str) -> str:
    """An A/B candidate where no row qualifies (served beside the default, never as it): among the rows not
    significantly worse than zero-shot at either size (exact McNemar p >= 0.05), the most right at 320 + 160 px."""
    fair = [r for r in rows if r["architecture"] == arch and not r["row"].startswith("zero_shot_")
            and not r["row"].endswith(EARLIER) and r["p_320"] != ""
            and all(float(r[f"p_{n}"]) >= 0.05 or int(r[f"correct_{n}"]) >= int(zero[f"correct_{n}"])
                    for n in ("320", "160") for zero in rows
                    if zero["architecture"] == arch and zero["row"].startswith("zero_shot_"))]
    return max(fair, key=lambda r: int(r["correct_320"]) + int(r["correct_160"]))["row"] if fair else ""


def write(rows: list[dict]) -> None:
    rows.sort(key=lambda r: (r["architecture"], not r["row"].startswith("zero_shot_"), r["row"]))
    CSV.parent.mkdir(exist_ok=True)
    with CSV.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in FIELDS} for r in rows)
    chosen = choose(rows)
    lines = ["# Recipe selection on the train hold-out, 320 px and 160 px", "",
             "Every row trained on the same 90 % of imagewoof2 train (stratified, hold-out seed 0) and is scored "
             "on the other 10 % (the same 902 files as the 320 px set and as the 160 px set has them); no model "
             "involved, teachers included, trained on them. Val is not used. p: exact McNemar test against the "
             "zero-shot row of the same architecture on the same images. Rule, fixed in advance: at least the "
             "zero-shot count at each size, then the most images right at 320 + 160 px. "
             "A difference of a few images is noise (one image = 0.11 pt). Rows marked (earlier run) are weight "
             "mixes of a previous training of the same run folder and recipe (kept for reference, never chosen); "
             "the same recipe does not retrain bit for bit on CPU.", "",
             "Command: `.venv/bin/python scripts/select_320.py RUN [RUN ...] --wise ALPHAS` (see its docstring).", "",
             "| row | what | hold-out 320 px | hold-out 160 px | p vs zero-shot (320 / 160) | training |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        total = int(r["total"])
        mark = " **(chosen)**" if chosen.get(r["architecture"]) == r["row"] else ""
        p = f"{r['p_320']} / {r['p_160']}" if r["p_320"] != "" else ""
        secs = f"{float(r['train_seconds']) / 60:.0f} min" if r.get("train_seconds") not in ("", None) else ""
        lines.append(f"| {r['row']}{mark} | {r['what']} | {fmt_acc(accuracy_entry(int(r['correct_320']), total))} "
                     f"| {fmt_acc(accuracy_entry(int(r['correct_160']), total))} | {p} | {secs} |")
    for arch in sorted({r["architecture"] for r in rows} - set(chosen)):
        candidate = choose_candidate(rows, arch)
        lines += ["", f"{arch}: no row reached zero-shot at both sizes, so none is a default. A/B candidate (served "
                  "beside the default, never as it; rule: among rows not significantly worse than zero-shot at "
                  "either size, exact McNemar p >= 0.05, the most images right at 320 + 160 px): "
                  + (f"**{candidate}**." if candidate else "none.")]
    MD.write_text("\n".join(lines) + "\n")
    print(f"wrote {MD}" + "".join(f"\nchosen for {a}: {c}" for a, c in chosen.items()))


if __name__ == "__main__":
    sys.exit(main())
