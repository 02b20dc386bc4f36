"""Calibrating the open-set answer (woof/openset.py: "breed", "other_dog", "not_dog") per export format.

The thresholds are chosen on photos the shipped model never trained on:
  - breed photos: the fixed train hold-out (the card's `data.holdout_seed`, 10 %), at 320 px and, the same
    photos, at 160 px: the rule must accept at least `target` of them at each size;
  - other photos: the calibration half of the open-set photos (`../shared/data/openset`, see `openset_split`):
    among the (dog, share, energy) thresholds that keep that acceptance, the one that turns away the most of them
    (the mean of the other-breed dogs' and the cats' and scenes' rejection rates) wins;
  - what a turned-away photo is: among the calibration photos that rule turns away, the dog probability that
    best tells the other-breed dogs ("other_dog") from the cats and scenes ("not_dog"), by balanced accuracy.
The report half of the open-set photos and val are never looked at here (scripts/openset_report.py scores them).
fp32 (PyTorch; TorchScript and ONNX match it to 1e-5) and INT8 (its own quantised file) are calibrated apart.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from woof.breeds import IMAGENET_ROWS
from woof.card import file_sha256
from woof.errors import WoofError
from woof.openset import DOG_CLASSES, ENERGY, OTHER_DOG, RULE, scores
from woof.preprocess import preprocess

from .checkpoint import load_model
from .data import holdout_split, list_samples, same_files

ENV_OPENSET = "WOOF_OPENSET_ROOT"
DEFAULT_OPENSET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "openset"
REPORT_DOG_SOURCE = "DiMasta/dogs"  # the dogs of this one source are left out for the report
NAME_THRESHOLD = 0.3  # name the other breed when the ImageNet head gives that one class at least this
CALIBRATED_FORMATS = ("fp32", "onnx-int8")
GRID = np.round(np.arange(0, 0.0305, 0.001), 3)  # hold-out quantiles tried for each threshold
KIND_GRID = np.round(np.arange(0.02, 0.981, 0.02), 2)  # dog probabilities tried for other_dog_threshold


@dataclass(frozen=True)
class OpenSetPhoto:
    path: Path
    group: str  # otherdogs | cats | nondog
    label: str
    source: str
    split: str  # calibration | report


def openset_split(group: str, source: str, file: str) -> str:
    """Dogs by source (one source, REPORT_DOG_SOURCE, is the report's); cats and scenes by a hash of the file
    name within their source (an even SHA-256 first word: report), so a new photo never moves the others."""
    if group == "otherdogs":
        return "report" if source == REPORT_DOG_SOURCE else "calibration"
    return "report" if int(hashlib.sha256(Path(file).name.encode()).hexdigest()[:8], 16) % 2 == 0 else "calibration"


def openset_root(path: str | os.PathLike | None = None) -> Path:
    root = Path(path or os.environ.get(ENV_OPENSET) or DEFAULT_OPENSET).expanduser()
    if not (root / "manifest.csv").is_file():
        raise WoofError(f"no open-set photos at {root} (manifest.csv missing): pass --openset PATH or set "
                        f"{ENV_OPENSET} to a folder with manifest.csv and the photos it lists")
    return root


def openset_photos(root: Path, split: str | None = None) -> list[OpenSetPhoto]:
    with open(root / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    photos = [OpenSetPhoto(root / r["file"], r["group"], r["label"], r["source"],
                           openset_split(r["group"], r["source"], r["file"])) for r in rows]
    missing = [p.path for p in photos if not p.path.is_file()]
    if missing:
        raise WoofError(f"{len(missing)} photos listed in {root / 'manifest.csv'} are missing, e.g. {missing[0]}")
    return [p for p in photos if split is None or p.split == split]


class LogitsSource:
    """Breed and ImageNet logits for image files from a model in one export format (fp32: PyTorch; onnx-int8:
    the file)."""

    def __init__(self, model, card: dict[str, Any], fmt: str, int8_path: Path | None = None):
        self.model, self.spec, self.fmt = model, card["preprocessing"], fmt
        self.session = None
        if fmt == "onnx-int8":
            from .export import ort_session

            self.session = ort_session(int8_path, threads=max(1, os.cpu_count() or 1))

    def logits(self, paths: list[Path], batch_size: int = 32, progress: bool = False,
               desc: str = "") -> tuple[np.ndarray, np.ndarray]:
        """(breed logits, ImageNet logits)."""
        from tqdm import tqdm

        breed, imagenet = [], []
        for i in tqdm(range(0, len(paths), batch_size), desc=desc, disable=not progress, leave=False):
            batch = np.stack([preprocess(p, self.spec) for p in paths[i:i + batch_size]]).astype(np.float32)
            b, m = self._run(batch)
            breed.append(b)
            imagenet.append(m)
        return np.concatenate(breed), np.concatenate(imagenet)

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.session is not None:
            return tuple(self.session.run(["breed_logits", "imagenet_logits"], {"image": batch}))
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(batch).to(memory_format=torch.channels_last)
            return tuple(t.float().numpy() for t in self.model.forward_both(x))


def choose_thresholds(held: dict[str, dict[str, np.ndarray]], dogs: dict[str, np.ndarray],
                      non_dogs: dict[str, np.ndarray], target: float) -> dict[str, Any]:
    """The (dog, share, energy) thresholds that accept >= target of the breed photos at every size and reject the
    most open-set calibration photos; ties go to the higher acceptance, then the lower quantiles. Each threshold
    is a hold-out quantile from GRID (the lowest over the sizes), so no one can reject more than its quantile."""
    keys = ("dog", "share", "energy")
    thresholds = {k: [min(float(np.quantile(s[k], q)) for s in held.values()) for q in GRID] for k in keys}
    named = {**{f"held {n}": s for n, s in held.items()}, "dogs": dogs, "non_dogs": non_dogs}
    # passes[k][name][q]: which photos of that set clear key k's threshold at quantile q
    passes = {k: {n: np.stack([s[k] >= t for t in thresholds[k]]) for n, s in named.items()} for k in keys}
    best = None
    for qd, qs, qe in itertools.product(range(len(GRID)), repeat=3):
        accept = {n: passes["dog"][n][qd] & passes["share"][n][qs] & passes["energy"][n][qe] for n in named}
        accepted = {n[5:]: float(accept[n].mean()) for n in named if n.startswith("held ")}
        if min(accepted.values()) < target:
            continue
        dog_rejected, non_dog_rejected = 1 - float(accept["dogs"].mean()), 1 - float(accept["non_dogs"].mean())
        key = ((dog_rejected + non_dog_rejected) / 2, min(accepted.values()), -(qd + qs + qe))
        if best is None or key > best[0]:
            best = (key, (qd, qs, qe), accepted, dog_rejected, non_dog_rejected, accept)
    if best is None:
        raise WoofError(f"no thresholds accept {target:.1%} of the hold-out photos")
    _, (qd, qs, qe), accepted, dog_rejected, non_dog_rejected, accept = best
    turned_away = {n: ~accept[n] for n in ("dogs", "non_dogs")}
    kind = choose_other_dog_threshold(dogs["dog"][turned_away["dogs"]], non_dogs["dog"][turned_away["non_dogs"]])
    return {"dog_threshold": round(thresholds["dog"][qd], 6), "share_threshold": round(thresholds["share"][qs], 6),
            ENERGY: round(thresholds["energy"][qe], 4), OTHER_DOG: kind,
            "holdout_acceptance": {k: round(v, 4) for k, v in accepted.items()},
            "other_dogs_rejected": round(dog_rejected, 4), "non_dogs_rejected": round(non_dog_rejected, 4),
            # of all calibration photos of the group, the share that gets exactly the right answer
            "other_dogs_answered_other_dog": round(float(((dogs["dog"] >= kind) & turned_away["dogs"]).mean()), 4),
            "non_dogs_answered_not_dog": round(float(((non_dogs["dog"] < kind) & turned_away["non_dogs"]).mean()), 4)}


def choose_other_dog_threshold(dogs: np.ndarray, non_dogs: np.ndarray) -> float:
    """The dog probability from KIND_GRID that best separates turned-away dogs (at or above it: "other_dog") from
    turned-away cats and scenes (below: "not_dog"), by balanced accuracy; ties go to the one nearest 0.5. With no
    photos of one group, 0.5 (the "mostly a dog" line)."""
    if not len(dogs) or not len(non_dogs):
        return 0.5
    key = [((dogs >= t).mean() + (non_dogs < t).mean(), -abs(t - 0.5)) for t in KIND_GRID]
    return float(KIND_GRID[max(range(len(KIND_GRID)), key=key.__getitem__)])


def _scores(source: LogitsSource, paths: list[Path], progress: bool, desc: str) -> dict[str, np.ndarray]:
    breed, imagenet = source.logits(paths, progress=progress, desc=desc)
    return scores(imagenet, IMAGENET_ROWS, breed)


def calibrate(model_dir: Path, data_root: Path, also: list[Path], openset: Path, formats=CALIBRATED_FORMATS,
              target: float = 0.98, progress: bool = True, limit_per_class: int | None = None,
              log=print) -> dict[str, Any]:
    """The card's new `open_set` section: the rule, the shared settings, and thresholds per format."""
    from .data import subset_per_class
    from .export import export

    model, card = load_model(model_dir)
    if model.imagenet_head is None:
        raise WoofError(f"{model_dir} has no ImageNet head: the open-set rule needs it (train with imagenet_head)")
    unknown = [f for f in formats if f not in CALIBRATED_FORMATS]
    if unknown:
        raise WoofError(f"unknown format {', '.join(unknown)}; calibrate {' or '.join(CALIBRATED_FORMATS)}")
    seed = (card.get("data") or {}).get("holdout_seed")
    fraction = (card.get("data") or {}).get("holdout_fraction") or 0.1
    if seed is None:
        raise WoofError(f"{model_dir}'s card records no train hold-out (data.holdout_seed): it trained on all of "
                        "train, so no photos are left that it never saw; retrain with --holdout 0.1")
    _, held = holdout_split(list_samples(data_root, "train"), fraction, seed)
    if limit_per_class:  # tests and smoke runs
        held = subset_per_class(held, limit_per_class)
    held_sets = {data_root.name: [s.path for s in held]}
    for root in also:
        held_sets[Path(root).name] = [s.path for s in same_files(held, Path(root))]
    photos = openset_photos(openset, "calibration")
    if limit_per_class:
        photos = photos[::max(1, len(photos) // (4 * limit_per_class))]
    dog_paths = [p.path for p in photos if p.group == "otherdogs"]
    non_dog_paths = [p.path for p in photos if p.group != "otherdogs"]
    old = card.get("open_set") if (card.get("open_set") or {}).get("rule") == RULE else {}
    result = {"rule": RULE, "dog_classes": list(DOG_CLASSES), "breed_imagenet_classes": list(IMAGENET_ROWS),
              "name_threshold": NAME_THRESHOLD, "formats": dict((old or {}).get("formats", {})),
              "calibration_data": {
                  "target_acceptance": target,
                  "breed_photos": f"train hold-out {fraction:.0%} (stratified, seed {seed}): {len(held)} photos, "
                                  f"at {' and '.join(held_sets)}",
                  "other_photos": f"open-set calibration split of {openset.name}/manifest.csv: {len(dog_paths)} "
                                  f"dogs of other breeds (every source but {REPORT_DOG_SOURCE}), "
                                  f"{len(non_dog_paths)} cats and scenes (even file-name hash)"}}
    for fmt in formats:
        with tempfile.TemporaryDirectory(prefix="woof-calibrate-") as tmp:
            int8 = None
            if fmt == "onnx-int8":
                int8 = export(model_dir, tmp, data_root, ["onnx-int8"], log=log)["onnx-int8"]["file"]
            source = LogitsSource(model, card, fmt, int8)

            held_scores = {name: _scores(source, paths, progress, f"{fmt} hold-out {name}")
                           for name, paths in held_sets.items()}
            chosen = choose_thresholds(held_scores, _scores(source, dog_paths, progress, f"{fmt} other dogs"),
                                       _scores(source, non_dog_paths, progress, f"{fmt} cats, scenes"), target)
            if int8 is not None:
                chosen["int8_sha256"] = file_sha256(int8)
        result["formats"][fmt] = chosen
        log(f"{fmt}: dog >= {chosen['dog_threshold']:.4f}, share >= {chosen['share_threshold']:.4f}, breed energy >= "
            f"{chosen[ENERGY]:.3f}; turned away and dog >= {chosen[OTHER_DOG]:.2f}: other_dog: hold-out "
            f"accepted {', '.join(f'{k} {v:.1%}' for k, v in chosen['holdout_acceptance'].items())}; calibration "
            f"photos turned away: other dogs {chosen['other_dogs_rejected']:.1%}, cats and scenes "
            f"{chosen['non_dogs_rejected']:.1%}; answered exactly: other_dog "
            f"{chosen['other_dogs_answered_other_dog']:.1%}, not_dog {chosen['non_dogs_answered_not_dog']:.1%}")
    return result
