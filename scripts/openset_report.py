#!/usr/bin/env python
"""The open-set table: what each served archive answers on photos it was not calibrated on.

For every archive in model_store/ (or those named), through the archive's own model file, card and open-set
calibration, exactly as the TorchServe handler computes it (woof/preprocess.py, then woof/openset.py):
  - breed photos answered "breed": the 320 px and the 160 px val (never used to calibrate), and the train
    hold-out the calibration used (for comparison);
  - the report half of the open-set photos (training/openset.py: openset_split): dogs of other breeds
    answered not "breed" (and "other_dog"), cats and everyday scenes answered not "breed" (and "not_dog");
  - top-1 on val, which the open-set rule does not touch (top_k comes from the breed head alone).
Counts with 95 % Wilson intervals, "on this set". INT8 figures depend on the CPU (named in the report).

    .venv/bin/python scripts/openset_report.py [--models lite0-int8] [--data data/imagewoof2-320]
        [--also ../shared/data/imagewoof2-160] [--openset ../shared/data/openset]
Writes reports/openset.md and reports/openset.csv.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from training.checkpoint import hardware  # noqa: E402
from training.data import holdout_split, list_samples, same_files  # noqa: E402
from training.evaluate import wilson_interval  # noqa: E402
from training.openset import openset_photos, openset_root  # noqa: E402
from woof.card import CARD_FILE  # noqa: E402
from woof.files import atomic_write_text  # noqa: E402
from woof.openset import answers, check_rule, other_dog_threshold  # noqa: E402
from woof.preprocess import preprocess  # noqa: E402

STORE = ROOT / "model_store"
FIELDS = ["archive", "version", "format", "photos", "question", "yes", "total", "share", "low95", "high95"]


class Archive:
    """A .mar's model file and card, run the way the handler runs it."""

    def __init__(self, path: Path, folder: Path):
        with zipfile.ZipFile(path) as z:
            z.extractall(folder)
        import json

        self.card = json.loads((folder / CARD_FILE).read_text())
        self.name, self.fmt = path.stem, self.card["archive"]["format"]
        self.rule = check_rule(self.card["open_set"], f"{path.name} open_set")
        model_file = folder / self.card["archive"]["serialized_file"]
        if self.fmt == "torchscript":
            import torch

            self.module, self.session = torch.jit.load(str(model_file)).eval(), None
        else:
            from training.export import ort_session

            self.module, self.session = None, ort_session(model_file, threads=2)

    def run(self, paths: list[Path], batch_size: int = 32) -> tuple[np.ndarray, list[dict]]:
        """(breed top-1 index per photo, open-set answers per photo)."""
        from tqdm import tqdm

        top1, out = [], []
        for i in tqdm(range(0, len(paths), batch_size), leave=False, desc=self.name):
            x = np.stack([preprocess(p, self.card["preprocessing"]) for p in paths[i:i + batch_size]])
            if self.session is not None:
                breed, imagenet = self.session.run(["breed_logits", "imagenet_logits"], {"image": x})
            else:
                import torch

                with torch.inference_mode():
                    breed, imagenet = (t.numpy() for t in self.module(torch.from_numpy(x)))
            top1.append(breed.argmax(1))
            out += answers(imagenet, self.rule, breed)
        return np.concatenate(top1), out


def row(archive: Archive, photos: str, question: str, yes: int, total: int) -> dict:
    low, high = wilson_interval(yes, total)
    return {"archive": archive.name, "version": archive.card["version"], "format": archive.fmt, "photos": photos,
            "question": question, "yes": yes, "total": total, "share": round(yes / total, 4) if total else None,
            "low95": round(low, 4), "high95": round(high, 4)}


def report(archive: Archive, data: Path, also: list[Path], openset: Path) -> list[dict]:
    rows = []
    for root in [data, *also]:
        val = list_samples(root, "val")
        top1, got = archive.run([s.path for s in val])
        labels = np.array([s.label for s in val])
        rows.append(row(archive, f"{root.name} val (10 breeds)", "answered breed",
                        sum(a["answer"] == "breed" for a in got), len(val)))
        rows.append(row(archive, f"{root.name} val (10 breeds)", "top-1 right (open-set rule not involved)",
                        int((top1 == labels).sum()), len(val)))
    seed = (archive.card.get("data") or {}).get("holdout_seed", 0)
    _, held = holdout_split(list_samples(data, "train"), 0.1, seed)
    for root in [data, *also]:
        paths = [s.path for s in (held if root == data else same_files(held, root))]
        _, got = archive.run(paths)
        rows.append(row(archive, f"{root.name} train hold-out (calibration)", "answered breed",
                        sum(a["answer"] == "breed" for a in got), len(paths)))
    photos = openset_photos(openset, "report")
    for group, title, exact in (("otherdogs", "dogs of other breeds", "other_dog"),
                                ("cats", "cats", "not_dog"), ("nondog", "everyday scenes", "not_dog")):
        chosen = [p for p in photos if p.group == group]
        _, got = archive.run([p.path for p in chosen])
        name = f"open-set report split: {title}"
        rows.append(row(archive, name, "answered not breed", sum(a["answer"] != "breed" for a in got), len(got)))
        rows.append(row(archive, name, f"answered {exact}", sum(a["answer"] == exact for a in got), len(got)))
        if group == "otherdogs":
            rows.append(row(archive, name, "other breed named", sum(a["other_breed"] is not None for a in got),
                            len(got)))
    return rows


def markdown(rows: list[dict], archives: list[Archive], command: str, openset: Path) -> str:
    lines = ["# Open-set answers per served archive", "",
             f"Regenerate: `{command}` (CPU: {hardware()}).", "",
             "Each archive runs its own model file with its own calibration (card `open_set`, chosen by "
             "`woof calibrate` on the train hold-out and the calibration half of the open-set photos). Nothing "
             "below was used to choose thresholds except the hold-out rows, shown for comparison. The open-set "
             "photos are a small, uneven sample (see their README): figures are \"on this set\", with 95 % "
             "Wilson intervals. Open-set split: dogs by source (the report holds every dog from "
             f"`{sorted({p.source for p in openset_photos(openset, 'report') if p.group == 'otherdogs'})[0]}`, "
             "a source calibration never saw), cats and scenes by an even SHA-256 of the file name.", ""]
    for archive in archives:
        rule = archive.rule
        lines += [f"## {archive.name} ({archive.card['name']} {archive.card['version']}, {archive.fmt})", "",
                  f"Rule: dog probability >= {rule['dog_threshold']:.4f} and our breeds' share of it >= "
                  f"{rule['share_threshold']:.4f}"
                  + (f" and breed energy >= {rule['energy_threshold']:.3f}" if "energy_threshold" in rule else "")
                  + f" (calibrated for {rule.get('calibrated_for', '?')}) -> breed; a photo turned away is "
                  f"other_dog when its dog probability >= {other_dog_threshold(rule):.2f}"
                  f", else not_dog; the other breed is named when its ImageNet probability >= "
                  f"{rule['name_threshold']}.", "",
                  "| photos | question | count | share | 95 % interval |", "|---|---|---|---|---|"]
        for r in rows:
            if r["archive"] == archive.name:
                lines.append(f"| {r['photos']} | {r['question']} | {r['yes']} / {r['total']} | "
                             f"{r['share']:.1%} | {r['low95']:.1%} – {r['high95']:.1%} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", help="archive names, comma-separated (default: every .mar in model_store/)")
    p.add_argument("--data", default="data/imagewoof2-320", help="primary Imagewoof copy (320 px)")
    p.add_argument("--also", action="append", default=None, help="other copies (default: the 160 px set)")
    p.add_argument("--openset", help="open-set photos (default: $WOOF_OPENSET_ROOT, else ../shared/data/openset)")
    p.add_argument("--out", default=str(ROOT / "reports"))
    args = p.parse_args(argv)
    also = [Path(a) for a in (args.also or [str(ROOT.parent / "shared" / "data" / "imagewoof2-160")])]
    openset = openset_root(args.openset)
    names = args.models.split(",") if args.models else sorted(m.stem for m in STORE.glob("*.mar"))
    rows, archives = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            archive = Archive(STORE / f"{name}.mar", Path(tmp) / name)
            archives.append(archive)
            rows += report(archive, Path(args.data), also, openset)
            for r in rows[-4:]:
                print(f"{r['archive']}: {r['photos']}: {r['question']}: {r['yes']}/{r['total']}")
        command = "python scripts/openset_report.py" + (f" --models {args.models}" if args.models else "")
        out = Path(args.out)
        atomic_write_text(out / "openset.md", markdown(rows, archives, command, openset) + "\n")
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(out / "openset.csv", buf.getvalue())
    print(f"wrote {out / 'openset.md'} and {out / 'openset.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
