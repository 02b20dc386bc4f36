#!/usr/bin/env python
"""Images/s of one process vs two torchrun processes on this machine, the same global batch and photos.

Three runs of one epoch of `woof train` (EfficientNet-Lite0 from ImageNet, 128 px crops, 40 photos per class of
the 160 px set, global batch 32): one process with 1 thread, one process with 2 threads (the normal single-
process run on 2 cores), and 2 processes x 1 thread under torchrun (gloo). Also one Barlow Twins pretraining
epoch each way. The figure is the history's images_per_s (image-passes / epoch seconds, summed over processes).
Run it on an otherwise idle machine.

    .venv/bin/python scripts/ddp_speed.py [--data ../shared/data/imagewoof2-160] [--per-class 40]
Writes reports/ddp_speed.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.checkpoint import hardware  # noqa: E402
from woof.files import atomic_write_text  # noqa: E402

BIN = Path(sys.executable).parent


def run(command: str, processes: int, threads: int, data: str, per_class: int, out: Path) -> float:
    common = ["--out", str(out), "--data", data, "--epochs", "1", "--limit-per-class", str(per_class),
              "--train-size", "128", "--batch-size", str(32 // processes), "--workers", "0", "--quiet"]
    if command == "train":
        common += ["--eval-size", "128"]
    else:
        common += ["--projector", "512-512-512"]
    woof = [str(BIN / "woof"), command, *common]
    cmd = woof if processes == 1 else [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", str(processes),
                                       "--no-python", *woof]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    with open(out / "history.csv") as f:
        return float(next(csv.DictReader(f))["images_per_s"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "imagewoof2-160"))
    p.add_argument("--per-class", type=int, default=40)
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for command in ("train", "pretrain"):
            for processes, threads in ((1, 1), (1, 2), (2, 1)):
                rate = run(command, processes, threads, args.data, args.per_class,
                           Path(tmp) / f"{command}-{processes}-{threads}")
                rows.append((command, processes, threads, rate))
                print(f"{command}: {processes} process(es) x {threads} thread(s): {rate} images/s", flush=True)
    lines = ["# One process vs two (torchrun, gloo) on this machine", "",
             f"`.venv/bin/python scripts/ddp_speed.py --per-class {args.per_class}` on {hardware()}. One epoch of "
             "EfficientNet-Lite0, 128 px, global batch 32; images/s = image-passes per second (two per photo for "
             "Barlow Twins), summed over processes.", "",
             "| objective | processes x threads | images/s |", "|---|---|---|"]
    lines += [f"| {'cross-entropy (woof train)' if c == 'train' else 'Barlow Twins (woof pretrain)'} | "
              f"{n} x {t} | {r} |" for c, n, t, r in rows]
    atomic_write_text(ROOT / "reports" / "ddp_speed.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
