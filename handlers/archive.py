"""`woof archive`: TorchServe model archives (.mar) of the trained models, in model_store/.

One archive = the exported model file (TorchScript, ONNX or INT8 ONNX), the one handler
(handlers/woof_handler.py), the card (with an `archive` section: format, parity figures, exporter
versions) and the shared preprocess.py. Archives are built in a temporary folder beside the target
and renamed into place, so model_store never holds half a .mar.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from training.checkpoint import hardware
from training.data import data_description, resolve_root
from training.export import CALIBRATION_IMAGES, FORMATS, PARITY_IMAGES, SERIALIZED_FILE, evaluate_export, export
from woof import openset, preprocess
from woof.card import CARD_FILE, WEIGHTS_FILE, archive_card, file_sha256, open_set_rule, read_card, validate_card
from woof.errors import WoofError
from woof.files import atomic_path, atomic_write_json

REPO = Path(__file__).resolve().parents[1]
MODEL_STORE = REPO / "model_store"
CHECKPOINTS = REPO / "training" / "checkpoints"
# archive name -> (checkpoint folder under training/checkpoints, export format)
ARCHIVES: dict[str, tuple[str, str]] = {
    "lite0": ("lite0", "torchscript"),
    "lite0-onnx": ("lite0", "onnx"),
    "lite0-int8": ("lite0", "onnx-int8"),
    "lite2": ("lite2", "torchscript"),
    "lite2-onnx": ("lite2", "onnx"),
    "lite2-int8": ("lite2", "onnx-int8"),
}
SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

RAW_COMMAND = """\
The same archive by hand (after exporting the model file and adding the archive section and that
format's open_set to a copy of the card):
  torch-model-archiver --model-name lite0-onnx --version 1.0.0 \\
      --serialized-file build/lite0-onnx/model.onnx \\
      --handler handlers/woof_handler.py \\
      --extra-files build/lite0-onnx/card.json,woof/preprocess.py,woof/openset.py \\
      --export-path model_store --force
(--serialized-file model.pt for TorchScript, model.int8.onnx for INT8.)"""


def handler_file() -> Path:
    return Path(__file__).resolve().with_name("woof_handler.py")


def shared_files() -> list[Path]:
    """The shared modules the handler imports, shipped beside it: the one preprocessing and the open-set rule."""
    return [Path(preprocess.__file__).resolve(), Path(openset.__file__).resolve()]


def archiver() -> str:
    """Path of the torch-model-archiver command (the venv's own first)."""
    beside = Path(sys.executable).parent / "torch-model-archiver"
    found = str(beside) if beside.is_file() else shutil.which("torch-model-archiver")
    if not found:
        raise WoofError("torch-model-archiver is not installed: pip install torch-model-archiver "
                        "(or scripts/setup.sh)")
    return found


def source_of(name: str) -> tuple[Path, str]:
    """(model folder, format) of a fixed archive name."""
    if name not in ARCHIVES:
        raise WoofError(f"unknown archive {name!r}; known: {', '.join(ARCHIVES)} "
                        "(or use --model-dir DIR --name NAME --format FORMAT)")
    checkpoint, fmt = ARCHIVES[name]
    return CHECKPOINTS / checkpoint, fmt



def source_hashes(model_dir: Path) -> dict[str, str]:
    return {"card_sha256": file_sha256(model_dir / CARD_FILE), "weights_sha256": file_sha256(model_dir / WEIGHTS_FILE)}


def is_current(mar: Path, model_dir: Path, fmt: str) -> bool:
    """True if `mar` holds `fmt` built from the card and weights now in `model_dir`.

    The card counts too: `woof eval --update-card` or a calibrated open-set threshold changes it.
    """
    inside = archive_card(mar)
    if inside is None or "archive" not in inside:
        return False
    try:
        now = source_hashes(model_dir)
    except OSError:
        return False
    source = inside["archive"].get("source", {})
    return inside["archive"].get("format") == fmt and all(source.get(k) == v for k, v in now.items())


def build_archive(model_dir: str | Path, name: str, fmt: str, data_root: str | Path,
                  store: str | Path = MODEL_STORE, parity_images: int = PARITY_IMAGES,
                  calibration_images: int = CALIBRATION_IMAGES, evaluate_int8: bool = True, log=print,
                  also: tuple[str | Path, ...] = ()) -> Path:
    """Export `model_dir` as `fmt` and package it as `store/name.mar`. Returns the archive's path."""
    if fmt not in FORMATS:
        raise WoofError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if not NAME.match(name):
        raise WoofError(f"archive name {name!r}: use letters, digits, '-' and '_'")
    command = archiver()
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise WoofError(f"no model folder at {model_dir} (train it first, see scripts/train_models.sh)")
    card = read_card(model_dir)
    if not SEMVER.match(str(card["version"])):
        raise WoofError(f"{model_dir / CARD_FILE}: version {card['version']!r} is not semantic (MAJOR.MINOR.PATCH)")
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise WoofError(f"no weights at {weights}")
    # no silent default threshold: an archive answers breed / other_dog / not_dog with its own calibration
    open_set = open_set_rule(card, fmt, str(model_dir / CARD_FILE))
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=store))
    try:
        start = time.perf_counter()
        info = export(model_dir, work, data_root, [fmt], parity_images, calibration_images, log=log)[fmt]
        serialized = info.pop("file")
        calibrated = open_set.get("int8_sha256")
        if calibrated and file_sha256(serialized) != calibrated:
            raise WoofError(f"the INT8 file built now differs from the one {model_dir / CARD_FILE} was calibrated "
                            "with (quantisation reads its calibration photos from --data): build with the --data "
                            f"copy woof calibrate used, or run woof calibrate {model_dir} --format onnx-int8 again")
        card["open_set"] = open_set
        if fmt == "onnx-int8" and evaluate_int8:
            # Quantisation changes the predictions: the card must carry this file's own accuracy.
            card["metrics"] = int8_metrics(serialized, fmt, card, [Path(data_root), *map(Path, also)], name, log)
        card["archive"] = {
            "name": name, **info,
            "source": {"model_dir": _display(model_dir), **source_hashes(model_dir)},
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_json(work / CARD_FILE, validate_card(card))
        cmd = [command, "--model-name", name, "--version", str(card["version"]),
               "--serialized-file", str(serialized), "--handler", str(handler_file()),
               "--extra-files", ",".join(map(str, [work / CARD_FILE, *shared_files()])),
               "--export-path", str(work), "--archive-format", "default", "--force"]
        # the archiver stages files in $TMPDIR/<model name>: a private TMPDIR keeps parallel builds apart
        result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TMPDIR": str(work)})
        built = work / f"{name}.mar"
        if result.returncode != 0 or not built.is_file():
            detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise WoofError(f"torch-model-archiver failed for {name}: {' / '.join(detail) or 'no output'}")
        target = store / f"{name}.mar"
        with atomic_path(target) as tmp:  # a server reading model_store never sees half an archive
            os.replace(built, tmp)
        log(f"built {target} ({target.stat().st_size / 1e6:.1f} MB, {fmt}, version {card['version']}, "
            f"{time.perf_counter() - start:.0f} s)")
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def int8_metrics(serialized: Path, fmt: str, card: dict[str, Any], roots: list[Path], name: str, log) -> dict:
    """The INT8 file's own accuracy on each copy of val (primary first), beside its fp32 model's figures."""

    fp32 = card.get("metrics") or {}
    fp32_sets = {fp32.get("val_set", "imagewoof2-160"): fp32, **fp32.get("other_val_sets", {})}
    per_set = []
    for root in roots:
        log(f"measuring {name} on the full val set of {root} (INT8 changes the accuracy)")
        measured = evaluate_export(serialized, fmt, root, card["preprocessing"], progress=False)
        val_set = data_description(root)["dataset"]
        source = {k: fp32_sets.get(val_set, {}).get(k) for k in ("val", "val_imagenet_val_subset")}
        shown = f" (fp32 {source['val']['top1']:.2%})" if source.get("val") else ""
        log(f"{name} on {val_set}: top-1 {measured['val']['top1']:.2%} full val{shown}, "
            f"{measured['val_imagenet_val_subset']['top1']:.2%} ImageNet-val subset")
        per_set.append({**measured, "val_set": val_set, "fp32_source": source})

    first, *others = per_set
    out = {**first, "measured_on": f"this INT8 file ({SERIALIZED_FILE[fmt]}) on {hardware()}"}
    if others:
        out["other_val_sets"] = {m["val_set"]: {k: v for k, v in m.items() if k != "val_set"} for m in others}
    return out


def _display(path: Path) -> str:
    """A path relative to the repository when inside it (archives may be committed)."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path.resolve())


def build_named(names: list[str], data_root, store: str | Path = MODEL_STORE, skip_untrained: bool = False,
                log=print, **kwargs) -> list[Path]:
    built = []
    for name in names:
        model_dir, fmt = source_of(name)
        if skip_untrained and not (model_dir / CARD_FILE).is_file():
            log(f"skipping {name}: no trained model at {model_dir} yet")
            continue
        built.append(build_archive(model_dir, name, fmt, data_root, store, log=log, **kwargs))
    if not built:
        raise WoofError(f"no archive built: none of {', '.join(names)} has a trained model yet")
    return built


# ---------------------------------------------------------------- CLI
def add_archive(sub) -> None:
    import argparse

    p = sub.add_parser(
        "archive", help="build TorchServe model archives (.mar) in model_store/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export a trained model (TorchScript, ONNX or INT8 ONNX), check it against PyTorch on "
                    "real val images, and package it with the woof handler, its card and the shared "
                    f"preprocessing as model_store/NAME.mar. Fixed names: {', '.join(ARCHIVES)}.",
        epilog=RAW_COMMAND)
    p.add_argument("names", nargs="*", metavar="NAME", help="archive name(s), e.g. lite0-onnx")
    p.add_argument("--all", action="store_true", help="every fixed archive whose model is trained")
    p.add_argument("--model-dir", metavar="DIR", help="any model folder (card.json + model.safetensors); "
                                                      "needs --name and --format")
    p.add_argument("--name", help="archive name for --model-dir")
    p.add_argument("--format", choices=FORMATS, help="export format for --model-dir")
    p.add_argument("--store", metavar="DIR", help=f"model store folder (default: {MODEL_STORE.relative_to(REPO)})")
    p.add_argument("--data", metavar="PATH", help="Imagewoof root for the parity check and INT8 calibration "
                                                  "(default: $WOOF_DATA_ROOT)")
    p.add_argument("--also", metavar="PATH", action="append", default=[],
                   help="another Imagewoof copy whose val the INT8 file is also scored on (e.g. the 160 px set)")
    p.add_argument("--parity-images", type=int, default=PARITY_IMAGES, help="val images for the parity check")
    p.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES,
                   help="train images for INT8 calibration")
    p.set_defaults(func=cmd_archive)


def cmd_archive(args) -> int:
    store = Path(args.store) if args.store else MODEL_STORE
    sizes = {"parity_images": args.parity_images, "calibration_images": args.calibration_images,
             "also": tuple(args.also)}
    if args.model_dir:
        if args.names or args.all or not (args.name and args.format):
            raise WoofError("--model-dir needs --name and --format (and no archive names or --all)")
        archiver()
        build_archive(args.model_dir, args.name, args.format, resolve_root(args.data), store, **sizes)
        return 0
    if args.name or args.format:
        raise WoofError("--name and --format go with --model-dir")
    if args.all == bool(args.names):
        raise WoofError(f"name the archives to build ({', '.join(ARCHIVES)}) or pass --all")
    names = list(ARCHIVES) if args.all else args.names
    for name in names:
        source_of(name)  # unknown names fail before any work
    archiver()
    build_named(names, resolve_root(args.data), store, skip_untrained=args.all, **sizes)
    return 0
