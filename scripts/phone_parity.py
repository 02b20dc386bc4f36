#!/usr/bin/env python
"""Does the serving path on phone-size photos answer like the evaluation path?

Serving decodes a big JPEG in draft mode (libjpeg's reduced-scale decode, 1/2 to 1/8, keeping the shorter
side at least the model's resize) and then resizes; evaluation decodes every pixel and then resizes. Both
then run the one preprocessing definition (woof/preprocess.py). Here val photos are upscaled to
~12 MP JPEGs exactly as `woof bench --phone-size` makes them (4000x3000, quality 90), and the same model
scores each photo both ways; on the 320 px photos themselves draft mode does nothing.

    .venv/bin/python scripts/phone_parity.py [MODEL_DIR] [--data data/imagewoof2-320] [--per-class 50]
Writes reports/phone_parity.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from scripts.bench import phone_jpegs  # noqa: E402
from training.checkpoint import load_model  # noqa: E402
from training.data import list_samples, subset_per_class  # noqa: E402
from training.evaluate import accuracy_entry, fmt_acc, mcnemar_exact  # noqa: E402
from training.predict import default_model_dir  # noqa: E402
from woof.preprocess import load_image, preprocess  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", nargs="?", default=None)
    parser.add_argument("--data", default=str(ROOT / "data" / "imagewoof2-320"))
    parser.add_argument("--per-class", type=int, default=50, help="val photos per class (each costs ~0.5 s)")
    args = parser.parse_args()
    import torch
    from tqdm import tqdm

    model_dir = Path(args.model_dir or default_model_dir())
    model, card = load_model(model_dir)
    spec = card["preprocessing"]
    samples = subset_per_class(list_samples(Path(args.data), "val"), args.per_class)
    right = {"evaluation path (full decode)": [], "serving path (draft decode)": []}
    agree = 0
    for sample in tqdm(samples, desc="phone-size photos", unit="img"):
        photo = phone_jpegs([sample.path])[0]
        full = preprocess(load_image(photo), spec)  # every pixel decoded, as ImageDataset loads
        served = preprocess(photo, spec)  # bytes: load_image with the draft target, as the handler does
        with torch.inference_mode():
            pred = model(torch.from_numpy(np.stack([full, served]))).argmax(1).tolist()
        right["evaluation path (full decode)"].append(pred[0] == sample.label)
        right["serving path (draft decode)"].append(pred[1] == sample.label)
        agree += pred[0] == pred[1]
    n = len(samples)
    shown = model_dir.resolve().relative_to(ROOT) if model_dir.resolve().is_relative_to(ROOT) else model_dir
    paths = list(right)
    test = mcnemar_exact(np.array(right[paths[1]]), np.array(right[paths[0]]))
    gap = (sum(right[paths[1]]) - sum(right[paths[0]])) / n
    lines = [f"# Phone-size photos: serving path vs evaluation path ({card['name']} {card['version']})", "",
             f"{n} val photos of {args.data} ({args.per_class} per class), each upscaled to a ~12 MP JPEG "
             "(4000x3000, quality 90, as `woof bench --phone-size`), scored by the same fp32 model both ways.", "",
             "| path | top-1 |", "|---|---|"]
    lines += [f"| {p} | {fmt_acc(accuracy_entry(sum(r), n))} |" for p, r in right.items()]
    lines += ["", f"Same answer on {agree}/{n} photos; serving minus evaluation: {gap * 100:+.2f} pt "
              f"({test['only_model_right']} photos right only when served, {test['only_zero_shot_right']} only "
              f"when fully decoded, exact McNemar p = {test['p_value']:.3g}).", "",
              f"Command: `.venv/bin/python scripts/phone_parity.py {shown} --per-class {args.per_class}`", ""]
    out = ROOT / "reports" / "phone_parity.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
