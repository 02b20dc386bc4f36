"""The training side of the `woof` command: data, train, eval, predict, export, wise, promote, calibrate.

Each `add_*` declares a subcommand, each `cmd_*` calls the pipeline. The pipeline modules that load torch are
imported inside the command that needs them, so `woof --help` and the serving commands start in a moment."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from woof import card as cards
from woof.breeds import WNIDS
from woof.errors import WoofError
from woof.files import atomic_write_json

from . import checkpoint
from .data import ENV_DATA_ROOT, EXPECTED_COUNTS, IMAGE_SUFFIXES, SPLITS, resolve_root
from .export import CALIBRATION_IMAGES, FORMATS, PARITY_IMAGES, export_cli
from .fetch import ARCHIVE_NAMES, CONNECT_TIMEOUT, fetch
from .recipe import PretrainConfig, TrainConfig
from .stats import stats, write_stats
from .verify import EXPECTED_IMAGENET_VAL, EXPECTED_SIDE, NOISY_CSV, format_verify, verify


def _data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="PATH",
                   help="Imagewoof root with train/ and val/ (default: $WOOF_DATA_ROOT)")


# ---------------------------------------------------------------- train
def recipe_flags(config_class) -> dict[str, tuple[str, dict]]:
    """flag -> (recipe field, argparse keywords), one per field that has help text: the recipe is the source."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(config_class)
    flags = {}
    for f in dataclasses.fields(config_class):
        text = f.metadata.get("help")
        if not text:
            continue
        kind = hints[f.name]
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if kind is bool:
            kw = {"action": argparse.BooleanOptionalAction}
        elif typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            kw = {"type": lambda v, item=item: tuple(item(x) for x in v.split(",")), "metavar": "MIN,MAX"}
        elif kind in (int, float, str):
            kw = {"type": kind}
        elif args and all(a in (int, float, str) for a in args):
            kw = {"type": args[0]}
        else:  # str | list[str] (teacher): one string, commas allowed
            kw = {"type": str}
        default = f.default if f.default is not dataclasses.MISSING else None
        flags["--" + f.name.replace("_", "-")] = (f.name, {**kw, "help": f"{text} (default: {default})"})
    return flags


def _run_parser(sub, name: str, recipe_class, example: str, func, **parser_kw):
    """A subcommand that runs a recipe: --config, --out, --data, --resume, one flag per recipe field, --quiet."""
    p = sub.add_parser(name, **parser_kw)
    p.add_argument("--config", metavar="YAML", help=f"recipe file, e.g. {example}")
    p.add_argument("--out", metavar="DIR", required=True, help="output folder of this run")
    _data_arg(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    for flag, (key, kw) in recipe_flags(recipe_class).items():
        p.add_argument(flag, dest=key, default=None, **kw)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=func)


def _run_recipe(args, recipe_class, to_train=lambda config: config) -> int:
    """Read the recipe (--config, then the flags), then train it in the one loop."""
    from .train import train

    overrides = {key: getattr(args, key) for key, _ in recipe_flags(recipe_class).values()
                 if getattr(args, key) is not None}
    config = (recipe_class.load(args.config, overrides) if args.config
              else recipe_class.from_dict(overrides, "flags"))
    command = "woof " + " ".join(a for a in sys.argv[1:] if a != "--resume")
    train(to_train(config), resolve_root(args.data), Path(args.out), resume=args.resume, progress=not args.quiet,
          command=None if args.resume else command)
    return 0


def add_train(sub) -> None:
    _run_parser(sub, "train", TrainConfig, "training/configs/lite0.yaml", cmd_train,
                help="fine-tune a model on Imagewoof",
                description="Fine-tune a model. Settings come from --config (YAML), then the flags "
                            "below override them. Writes last.pt (resumable), history.csv, "
                            "model.safetensors and card.json to --out.")


def cmd_train(args) -> int:
    return _run_recipe(args, TrainConfig)


# ---------------------------------------------------------------- pretrain, knn
def add_pretrain(sub) -> None:
    _run_parser(sub, "pretrain", PretrainConfig, "training/configs/research/bt_pretrain_96.yaml", cmd_pretrain,
                help="Barlow Twins self-supervised pretraining on unlabelled train images",
                description="Learn a backbone without labels: two augmented views of each train photo "
                            "(the fixed hold-out and val are never read), a projector, and the Barlow "
                            "Twins loss, in the same loop as woof train. Writes last.pt (resumable), "
                            "history.csv (loss, on- and off-diagonal terms, embedding spread), "
                            "model.safetensors and card.json to --out. Use it with "
                            "`woof train --init OUT --pretrained none --head-init random`, or `woof knn OUT`.")


def cmd_pretrain(args) -> int:
    return _run_recipe(args, PretrainConfig, PretrainConfig.to_train_config)


def add_knn(sub) -> None:
    p = sub.add_parser("knn", help="kNN accuracy of a backbone's frozen features (no training)",
                       description="Features of the train photos (minus the fixed 10 %% hold-out) are the bank; "
                                   "each val photo takes the weighted vote of its k nearest (cosine) neighbours "
                                   "(k 200, temperature 0.1, as lightly's benchmarks). Writes knn.json.")
    p.add_argument("model_dir", nargs="?", help="model or woof pretrain folder")
    p.add_argument("--random", metavar="ARCH", help="a randomly initialised ARCH instead (the floor)")
    p.add_argument("--seed", type=int, default=0, help="the random initialisation's seed (with --random)")
    _data_arg(p)
    p.add_argument("--size", type=int, help="input size (default: the card's, or 128 with --random)")
    p.add_argument("-k", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--limit-per-class", type=int, help="N photos per class in bank and queries (smoke runs)")
    p.add_argument("--out", metavar="DIR", help="where knn.json goes (default: MODEL_DIR, or reports/knn-ARCH)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_knn)


def cmd_knn(args) -> int:
    from .barlow import knn_top1
    from .data import holdout_split, list_samples, subset_per_class
    from .evaluate import predict_features
    from .models import create_model, default_preprocessing

    if bool(args.model_dir) == bool(args.random):
        raise WoofError("give a model folder or --random ARCH (one of them)")
    if args.k < 1 or not args.temperature > 0:
        raise WoofError("-k must be >= 1 and --temperature > 0")
    if args.random:
        import torch

        torch.manual_seed(args.seed)  # the floor must not move between runs
        model = create_model(args.random, pretrained="none", imagenet_head=False)
        name = f"random {args.random} (seed {args.seed})"
        spec = default_preprocessing(args.random, args.size or 128)
        out = Path(args.out or Path("reports") / f"knn-random-{args.random}")
    else:
        model, card = checkpoint.load_model(args.model_dir)
        spec = {**card["preprocessing"], **({"input_size": args.size} if args.size else {})}
        name, out = f"{card['name']} {card['version']}", Path(args.out or args.model_dir)
    root = resolve_root(args.data)
    bank, _ = holdout_split(list_samples(root, "train"), 0.1, 0)  # the hold-out stays unseen here too
    queries = list_samples(root, "val")
    if args.limit_per_class:
        bank, queries = subset_per_class(bank, args.limit_per_class), subset_per_class(queries, args.limit_per_class)
    bank_f, bank_y = predict_features(model.eval(), bank, spec, progress=not args.quiet)
    val_f, val_y = predict_features(model, queries, spec, progress=not args.quiet)
    top1 = knn_top1(bank_f, bank_y, val_f, val_y, args.k, args.temperature)
    result = {"model": name, "top1": round(top1, 4), "k": args.k, "temperature": args.temperature,
              "input_size": spec["input_size"], "bank": f"{root.name} train minus the 10 % hold-out, {len(bank)}",
              "queries": f"{root.name} val, {len(queries)}"}
    atomic_write_json(out / "knn.json", result)
    print(f"kNN top-1 of {name} on {root.name} val: {top1:.2%} (k {args.k}, t {args.temperature}, "
          f"{spec['input_size']} px; bank {len(bank)}, queries {len(queries)}); wrote {out / 'knn.json'}")
    return 0


# ---------------------------------------------------------------- eval
def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a trained model (or the zero-shot baseline) on val",
                       description="Top-1/top-5 on full val and on the 162 ImageNet-val-origin images, "
                                   "per-class precision/recall/F1, confusion matrix and a gallery of "
                                   "mistakes, written to --report. --also scores the same model on other "
                                   "copies of val (e.g. the 160 px set beside the primary 320 px one).")
    p.add_argument("model_dir", nargs="?", help="folder with card.json + model.safetensors "
                                                "(default: the committed default model)")
    _data_arg(p)
    p.add_argument("--also", metavar="PATH", action="append", default=[],
                   help="another Imagewoof copy to score val on too (repeatable); its report goes to "
                        "REPORT/<its name>, its figures to the card's other_val_sets")
    p.add_argument("--report", metavar="DIR", help="report folder (default: MODEL_DIR/report)")
    p.add_argument("--baseline", action="store_true",
                   help="also evaluate the untrained ImageNet model's zero-shot baseline at the same preprocessing, "
                        "with an exact McNemar test of the model against it on the same images")
    p.add_argument("--zero-shot", metavar="ARCH",
                   help="evaluate only the zero-shot baseline of ARCH (no trained model needed)")
    p.add_argument("--eval-size", type=int, help="input size for --zero-shot (default: native)")
    p.add_argument("--update-card", action="store_true", help="write the figures into the model's card.json")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--limit-per-class", type=int, help="evaluate on N val images per class (smoke runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from .evaluate import card_metrics, evaluate_val, summary_lines, write_report
    from .models import create_model, default_preprocessing
    from .predict import default_model_dir

    roots = [resolve_root(args.data), *(Path(p).expanduser() for p in args.also)]
    run = dict(batch_size=args.batch_size, workers=args.workers, progress=not args.quiet,
               limit_per_class=args.limit_per_class)
    if args.zero_shot:
        spec = default_preprocessing(args.zero_shot, args.eval_size)
        model, zero_shot = None, create_model(args.zero_shot, pretrained="imagenet")
        title = f"zero-shot baseline: {args.zero_shot} ImageNet head, {spec['input_size']} px"
        report = Path(args.report or Path("reports") / f"zero-shot-{args.zero_shot}-{spec['input_size']}")
    else:
        model_dir = Path(args.model_dir or default_model_dir())
        model, card = checkpoint.load_model(model_dir)
        spec = card["preprocessing"]
        zero_shot = create_model(card["architecture"], pretrained="imagenet") if args.baseline else None
        title = f"{card['name']} {card['version']} ({card['architecture']}, {spec['input_size']} px)"
        report = Path(args.report or model_dir / "report")
    per_set = []
    for i, root in enumerate(roots):
        metrics, samples, logits, labels = evaluate_val(root, model, spec, zero_shot, **run)
        folder = report if i == 0 else report / metrics["val_set"]
        paths = write_report(folder, f"{title}, {metrics['val_set']} val", metrics, samples, logits, labels)
        print("\n".join([f"{title} on {root}", *summary_lines(metrics), f"  report: {paths['report.md']}"]))
        per_set.append(metrics)
    if args.update_card and not args.zero_shot:
        if args.limit_per_class:
            raise WoofError("--update-card needs the full val set (drop --limit-per-class)")
        card["metrics"] = card_metrics(per_set)
        cards.write_card(model_dir, card)
        print(f"updated {model_dir / cards.CARD_FILE}")
    return 0


# ---------------------------------------------------------------- predict
def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="name the breed in photos (committed default model)",
                       description="Top-3 breeds for each image. Uses the committed default model unless "
                                   "--model-dir (or $WOOF_MODEL_DIR) says otherwise.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="photo files (JPEG, PNG, WebP, ...)")
    p.add_argument("--model-dir", metavar="DIR", help="folder with card.json + model.safetensors")
    p.add_argument("--top-k", type=int, default=3, help="how many breeds to list (default 3)")
    p.add_argument("--json", action="store_true", help="one JSON object per line per image")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    from .predict import Predictor, format_result

    if not 1 <= args.top_k <= 10:
        raise WoofError("--top-k must be between 1 and 10")
    predictor = Predictor(args.model_dir)
    results = predictor.predict(args.images, args.top_k)
    for r in results:
        print(json.dumps(r) if args.json else format_result(r))
    return 1 if any("error" in r for r in results) else 0


# ---------------------------------------------------------------- export
def add_export(sub) -> None:
    p = sub.add_parser("export", help="export a model to TorchScript / ONNX / INT8 ONNX and check parity",
                       description="Write model.pt, model.onnx and/or model.int8.onnx (inputs `image`, outputs "
                                   "`breed_logits`, `imagenet_logits`, dynamic batch) and parity.json with the "
                                   "agreement with PyTorch on real val images. fp32 exports that disagree fail.")
    p.add_argument("model_dir", help="folder with card.json + model.safetensors")
    p.add_argument("--out", metavar="DIR", required=True, help="output folder")
    p.add_argument("--format", dest="formats", action="append", choices=FORMATS,
                   help="repeatable (default: all three)")
    _data_arg(p)
    p.add_argument("--parity-images", type=int, default=PARITY_IMAGES, help="val images for the parity check")
    p.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES,
                   help="train images for INT8 calibration")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    return export_cli(args.model_dir, args.out, args.data, args.formats or list(FORMATS), args.parity_images,
                      args.calibration_images)


# ---------------------------------------------------------------- wise, calibrate
def add_wise(sub) -> None:
    p = sub.add_parser("wise", help="mix a fine-tuned model's weights with its zero-shot start (WiSE-FT)",
                       description="theta = (1 - alpha) * zero-shot + alpha * fine-tuned, for models trained "
                                   "with head_init imagenet and frozen BatchNorm. Choose alpha on the train "
                                   "hold-out (scripts/ablate_recipe.py --full), never on val.")
    p.add_argument("model_dir", help="trained model folder")
    p.add_argument("--alpha", type=float, required=True, help="share of the fine-tuned weights, 0..1")
    p.add_argument("--out", metavar="DIR", help="output folder (default: replace MODEL_DIR's weights and card)")
    p.add_argument("--version", help="version of the mixed model (default: the source's)")
    p.set_defaults(func=cmd_wise)


def cmd_wise(args) -> int:
    from .wise import make_wise_model

    out = Path(args.out or args.model_dir)
    card = make_wise_model(Path(args.model_dir), args.alpha, out, args.version)
    print(f"wrote {out} ({card['name']} {card['version']}, alpha {args.alpha}); "
          f"evaluate it: woof eval {out} --baseline --update-card")
    return 0


def add_promote(sub) -> None:
    p = sub.add_parser("promote", help="make a trained run the next version of a committed model",
                       description="Copy RUN's weights, card, recipe and history into --to (e.g. "
                                   "training/checkpoints/lite0). The card gets the next version of the one it "
                                   "replaces and that card's summary first in previous_versions; the old "
                                   "report folder is removed (its figures belong to the old weights). Then: "
                                   "woof eval --to-folder --baseline --update-card.")
    p.add_argument("run", help="trained run folder (card.json + model.safetensors)")
    p.add_argument("--to", required=True, metavar="DIR", help="the committed model folder it replaces")
    p.set_defaults(func=cmd_promote)


def cmd_promote(args) -> int:
    import shutil

    run, target = Path(args.run), Path(args.to)
    card = cards.read_card(run)
    if not (run / cards.WEIGHTS_FILE).is_file():
        raise WoofError(f"no weights at {run / cards.WEIGHTS_FILE}")
    if run.resolve() == target.resolve():
        raise WoofError("--to must be another folder than RUN")
    if (target / cards.CARD_FILE).exists():
        old = cards.read_card(target)
        if old.get("weights_sha256") and old.get("weights_sha256") == card.get("weights_sha256"):
            raise WoofError(f"{target} already holds these weights ({old['name']} {old['version']}); "
                            "nothing to promote")
        card = cards.succeed({**card, "name": old["name"]}, old)
    target.mkdir(parents=True, exist_ok=True)
    for name in (cards.WEIGHTS_FILE, "history.csv", "config.yaml"):
        if (run / name).is_file():
            shutil.copy2(run / name, target / name)
    card["metrics"] = {}  # new weights: woof eval --update-card measures them
    shutil.rmtree(target / "report", ignore_errors=True)
    cards.write_card(target, card)
    print(f"{target}: now {card['name']} {card['version']} (replaces "
          f"{card['previous_versions'][0]['version'] if card.get('previous_versions') else 'nothing'}); "
          f"next: woof eval {target} --baseline --update-card")
    return 0


def add_calibrate(sub) -> None:
    p = sub.add_parser("calibrate", help="calibrate the open-set answer (one of the 10 / another dog / not a dog)",
                       description="Chooses the open-set thresholds (dog probability and our breeds' share of it, "
                                   "from the ImageNet head) per export format, on photos the model never trained "
                                   "on: the train hold-out at every size given (--data, --also) must be accepted "
                                   "at --target, and among such thresholds the ones that turn away the most "
                                   "open-set calibration photos (dogs of other breeds, cats, scenes) win. Writes "
                                   "open_set into the card; `woof archive` carries it into each archive.")
    p.add_argument("model_dir", help="trained model folder")
    _data_arg(p)
    p.add_argument("--also", metavar="PATH", action="append", default=[],
                   help="the same photos at another size (e.g. the 160 px set beside the 320 px one; repeatable)")
    p.add_argument("--openset", metavar="PATH",
                   help="open-set photos with manifest.csv (default: $WOOF_OPENSET_ROOT, else ../shared/data/openset)")
    p.add_argument("--format", dest="formats", action="append", choices=["fp32", "onnx-int8"],
                   help="repeatable (default: both; fp32 serves PyTorch, TorchScript and ONNX)")
    p.add_argument("--target", type=float, default=0.98, help="share of hold-out breed photos to accept at each size")
    p.add_argument("--limit-per-class", type=int, help="N hold-out photos per class (smoke runs and tests)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args) -> int:
    from .openset import CALIBRATED_FORMATS, calibrate, openset_root

    if not 0.5 <= args.target < 1:
        raise WoofError("--target must be in [0.5, 1)")
    model_dir = Path(args.model_dir)
    result = calibrate(model_dir, resolve_root(args.data), [Path(p).expanduser() for p in args.also],
                       openset_root(args.openset), args.formats or list(CALIBRATED_FORMATS), args.target,
                       progress=not args.quiet, limit_per_class=args.limit_per_class)
    card = cards.read_card(model_dir)
    card["open_set"] = result
    cards.write_card(model_dir, card)
    print(f"updated {model_dir / cards.CARD_FILE} (open_set: {', '.join(result['formats'])})")
    return 0


# ---------------------------------------------------------------- data
def _data_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="PATH",
                   help=f"Imagewoof root with train/ and val/ (default: ${ENV_DATA_ROOT})")


def _common_flags(p: argparse.ArgumentParser, workers: int) -> None:
    p.add_argument("--workers", type=int, default=workers, metavar="N",
                   help=f"processes that read images (default {workers})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_data(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("data", help="fetch, verify and describe Imagewoof", formatter_class=fmt,
                       description="Get the Imagewoof data set, check it and describe it.\n\n"
                                   "  woof data fetch                      download + unpack imagewoof2-160 to ./data\n"
                                   "  woof data verify --data PATH         check layout, counts and every image\n"
                                   "  woof data stats  --data PATH         class balance, sizes, plots -> reports/data")
    data_sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    f = data_sub.add_parser(
        "fetch", help="download (or take a local copy of) the official imagewoof2 archive", formatter_class=fmt,
        description="Download the official fast.ai archive (imagewoof2-160.tgz, -320 or full) with a progress bar, "
                    "check that it\nis an Imagewoof tar (one folder holding train/<wnid>/ and val/<wnid>/), unpack it "
                    "safely (no paths\nout of --dest) into DEST/imagewoof2-SIZE and check the layout. Unpacking goes "
                    "through a hidden\ntemporary folder, so a failure leaves nothing half-done. Offline, the download "
                    f"fails within\n~{CONNECT_TIMEOUT} s and says so.\n\n"
                    "--from PATH takes a local copy instead of downloading:\n"
                    "  a folder   (the imagewoof2 root, or a folder holding exactly one) is checked and used IN "
                    "PLACE:\n             nothing is copied; the command prints the WOOF_DATA_ROOT line to use it\n"
                    "  a .tgz     (or .tar.gz / .tar) is checked and unpacked into --dest like a download",
        epilog=f"Afterwards: export {ENV_DATA_ROOT}=<the printed folder>, then `woof data verify`.")
    f.add_argument("--size", choices=list(ARCHIVE_NAMES), default="160",
                   help="archive to download: 160 (shorter side 160 px, ~165 MB unpacked; default), 320, or full")
    f.add_argument("--dest", metavar="DIR", default="data", help="where to unpack (default: ./data)")
    f.add_argument("--from", dest="source", metavar="PATH",
                   help="use a local imagewoof2 folder (in place) or .tgz (unpacked into --dest) instead of "
                        "downloading")
    f.add_argument("--url", help="download from this URL (a mirror) instead of the official fast.ai one")
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    f.set_defaults(func=cmd_fetch)

    v = data_sub.add_parser(
        "verify", help="check layout, counts and that every image decodes", formatter_class=fmt,
        description="Check an Imagewoof folder:\n"
                    "  - the 10 class folders in train/ and val/ (a missing one is named by breed)\n"
                    "  - images per class and split, against the official imagewoof2 split "
                    f"(train {EXPECTED_COUNTS['train']:,}, val {EXPECTED_COUNTS['val']:,})\n"
                    "  - every image decodes fully, as training loads it (--quick: headers only)\n"
                    "  - greyscale files, ImageNet-val-origin val images (official: "
                    f"{EXPECTED_IMAGENET_VAL}), and that\n    {NOISY_CSV} lists exactly the files on disk\n\n"
                    "Fails (exit 2) when the layout is wrong, an image is corrupt or a class folder is empty,\n"
                    "and with --expect SIZE when anything differs from that official copy.\n"
                    "Only warns when counts differ from the official split (a subset or another version\n"
                    "trains fine but does not compare with published figures) or the csv does not match.")
    _data_flag(v)
    v.add_argument("--quick", action="store_true", help="read image headers only, skip full decoding")
    v.add_argument("--expect", choices=list(EXPECTED_SIDE),
                   help="this must be the official imagewoof2-160, -320 or full copy: every official file present, "
                        "nothing else, every shorter side 160 / 320 px; any difference fails (exit 2)")
    _common_flags(v, workers=min(2, os.cpu_count() or 1))
    v.set_defaults(func=cmd_verify)

    s = data_sub.add_parser(
        "stats", help="class balance, image sizes and colour modes, as markdown + PNG plots",
        description="Describe an Imagewoof folder: images per breed and split, image sizes (read from the file "
                    "headers, no decoding), greyscale count. Writes DIR/data_stats.md with markdown tables, "
                    "DIR/class_balance_train.png, DIR/class_balance_val.png and DIR/image_sizes.png.")
    _data_flag(s)
    s.add_argument("--out", metavar="DIR", default=str(Path("reports") / "data"),
                   help="report folder (default: reports/data)")
    _common_flags(s, workers=1)
    s.set_defaults(func=cmd_stats)


def cmd_fetch(args) -> int:
    root = fetch(args.size, args.dest, source=args.source, url=args.url, progress=not args.quiet)
    counts = {split: sum(1 for w in WNIDS for p in (root / split / w).iterdir()
                         if p.suffix.lower() in IMAGE_SUFFIXES) for split in SPLITS}
    print(f"Imagewoof ready at {root.resolve()}: train {counts['train']:,} images, val {counts['val']:,}")
    print(f"use it with:\n  export {ENV_DATA_ROOT}={root.resolve()}\ncheck every image with:\n  woof data verify")
    return 0


def cmd_verify(args) -> int:
    report = verify(resolve_root(args.data), decode=not args.quick, workers=args.workers, progress=not args.quiet,
                    expect=args.expect)
    print(format_verify(report), flush=True)
    if not report.ok:
        raise WoofError(f"{report.root} failed verification: " + "; ".join(report.errors))
    return 0


def cmd_stats(args) -> int:
    root = resolve_root(args.data)
    st = stats(root, workers=args.workers, progress=not args.quiet)
    paths = write_stats(st, Path(args.out))
    totals = {s: sum(c.values()) for s, c in st["counts"].items()}
    print(f"{root}: train {totals['train']:,}, val {totals['val']:,} images, "
          f"{sum(st['greyscale'].values())} greyscale")
    print("wrote " + "\n      ".join(str(p) for p in paths))
    return 0
