"""`woof data verify`: check an Imagewoof copy (layout, counts, every image decodes, the official file list)."""

from __future__ import annotations

import csv
import multiprocessing
import time
from dataclasses import dataclass, field
from pathlib import Path

from woof.breeds import BREEDS, WNIDS
from woof.errors import WoofError
from woof.preprocess import ImageError, load_image

from .data import (
    EXPECTED_COUNTS,
    IMAGE_SUFFIXES,
    IMAGENET_VAL_PREFIX,
    SPLITS,
    check_layout,
)
from .fetch import ARCHIVE_NAMES

NOISY_CSV = "noisy_imagewoof.csv"
EXPECTED_IMAGENET_VAL = 162  # val images that come from ImageNet's own val set (official split)
PARALLEL_FROM = 100  # fewer images than this are checked in-process (a pool costs ~1 s to start)
MAX_LISTED = 20  # corrupt files / csv mismatches printed in full up to this many
# The official imagewoof2 file list (the `path` column of the 160 px set's noisy_imagewoof.csv, sorted):
# the three sizes hold exactly these 12,954 files. Regenerate: cut -d, -f1 noisy_imagewoof.csv | tail -n +2 |
# sort | gzip -9n > training/imagewoof2_files.txt.gz
OFFICIAL_FILES = Path(__file__).with_name("imagewoof2_files.txt.gz")
EXPECTED_SIDE = {"160": 160, "320": 320, "full": None}  # shorter side of every image; full: originals vary


def official_files() -> list[str]:
    import gzip

    with gzip.open(OFFICIAL_FILES, "rt") as f:
        return [line.strip() for line in f if line.strip()]


# ================================================================ fetch
@dataclass(frozen=True)
class ImageInfo:
    path: str
    mode: str = ""
    width: int = 0
    height: int = 0
    error: str = ""


def inspect_image(path: str, decode: bool = True) -> ImageInfo:
    """Mode and size from the header; with decode, also fully decode it the way training does."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            mode, (width, height) = img.mode, img.size
    except Exception as e:  # any failure to read is a finding, not a crash
        return ImageInfo(path, error=f"unreadable header ({type(e).__name__}: {e})")
    if decode:
        try:
            load_image(path)
        except ImageError as e:
            return ImageInfo(path, mode, width, height, str(e))
        except Exception as e:  # e.g. an unexpected decoder failure
            return ImageInfo(path, mode, width, height, f"decoding failed ({type(e).__name__}: {e})")
    return ImageInfo(path, mode, width, height)


def _inspect_decode(path: str) -> ImageInfo:
    return inspect_image(path, decode=True)


def _inspect_header(path: str) -> ImageInfo:
    return inspect_image(path, decode=False)


def inspect_images(paths: list[Path], decode: bool = True, workers: int = 2, progress: bool = False,
                   desc: str = "images") -> list[ImageInfo]:
    """inspect_image over many files, in a pool of `workers` processes for big lists; input order kept."""
    from tqdm import tqdm

    func = _inspect_decode if decode else _inspect_header
    names = [str(p) for p in paths]
    with tqdm(total=len(names), desc=desc, unit="img", disable=not progress) as bar:
        if workers <= 1 or len(names) < PARALLEL_FROM:
            out = []
            for name in names:
                out.append(func(name))
                bar.update()
            return out
        # spawn: no fork of a process that may hold threads (tqdm's monitor, torch, ...)
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            out = []
            for info in pool.imap(func, names, chunksize=64):
                out.append(info)
                bar.update()
            return out


def image_files(root: Path) -> dict[str, dict[str, list[Path]]]:
    """split -> wnid -> sorted image paths (the same files `list_samples` uses)."""
    return {split: {w: sorted(p for p in (root / split / w).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                    for w in WNIDS} for split in SPLITS}


def _other_files(root: Path) -> list[Path]:
    return [p for s in SPLITS for w in WNIDS for p in sorted((root / s / w).iterdir())
            if p.suffix.lower() not in IMAGE_SUFFIXES]


# ================================================================ verify
@dataclass
class VerifyReport:
    root: Path
    counts: dict[str, dict[str, int]]  # split -> wnid -> images
    decoded: bool
    corrupt: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    greyscale: list[str] = field(default_factory=list)  # mode "L" in the file
    imagenet_val: int = 0  # val images named ILSVRC2012_val_*
    noisy_csv: bool = False  # noisy_imagewoof.csv present and readable
    noisy_rows: int = 0
    noisy_missing: list[str] = field(default_factory=list)  # on disk, not in the csv
    noisy_extra: list[str] = field(default_factory=list)  # in the csv, not on disk
    other_files: list[str] = field(default_factory=list)  # non-image files in class folders
    expect: str | None = None  # --expect: the official copy this must be (160, 320, full)
    official_missing: list[str] = field(default_factory=list)  # official files not on disk
    official_extra: list[str] = field(default_factory=list)  # images on disk that are not official
    wrong_size: list[tuple[str, int]] = field(default_factory=list)  # (path, shorter side) off the expected side
    seconds: float = 0.0

    @property
    def totals(self) -> dict[str, int]:
        return {split: sum(per_class.values()) for split, per_class in self.counts.items()}

    @property
    def official_counts(self) -> bool:
        return self.totals == EXPECTED_COUNTS

    @property
    def errors(self) -> list[str]:
        """Findings that make the data unusable: corrupt images, empty class folders."""
        out = [f"{split}/{w} ({BREEDS[w]}) holds no images"
               for split, per_class in self.counts.items() for w, n in per_class.items() if n == 0]
        if self.corrupt:
            out.append(f"{len(self.corrupt)} corrupt image(s)")
        if self.expect:  # a claimed official copy must be exactly that
            name = ARCHIVE_NAMES[self.expect]
            if self.official_missing:
                out.append(f"{len(self.official_missing):,} file(s) of the official {name} missing")
            if self.official_extra:
                out.append(f"{len(self.official_extra):,} image(s) not in the official {name}")
            if self.wrong_size:
                side = EXPECTED_SIDE[self.expect]
                out.append(f"{len(self.wrong_size):,} image(s) whose shorter side is not {side} px")
        return out

    @property
    def warnings(self) -> list[str]:
        """Findings worth knowing that do not stop training."""
        out = []
        for split, n in self.totals.items():
            if n != EXPECTED_COUNTS[split]:
                out.append(f"{split} has {n:,} images, the official imagewoof2 split has {EXPECTED_COUNTS[split]:,} "
                           "(a subset or a different version?); accuracy will not compare with published figures")
        if self.official_counts and self.imagenet_val != EXPECTED_IMAGENET_VAL:
            out.append(f"{self.imagenet_val} val images come from ImageNet val, the official split has "
                       f"{EXPECTED_IMAGENET_VAL}")
        if not self.noisy_csv:
            out.append(f"{NOISY_CSV} is missing or unreadable (only needed for --noise)")
        else:
            if self.noisy_missing:
                out.append(f"{len(self.noisy_missing)} image(s) on disk are not listed in {NOISY_CSV} "
                           "(training with --noise would stop on them)")
            if self.noisy_extra:
                out.append(f"{NOISY_CSV} lists {len(self.noisy_extra)} file(s) that are not on disk")
        if self.other_files:
            out.append(f"{len(self.other_files)} non-image file(s) in class folders are ignored")
        return out

    @property
    def ok(self) -> bool:
        return not self.errors


def verify(root: Path, decode: bool = True, workers: int = 2, progress: bool = False,
           expect: str | None = None) -> VerifyReport:
    """Check an Imagewoof folder. Raises WoofError if the layout is wrong; otherwise returns a report
    whose `errors` (corrupt images, empty classes; with `expect`, any difference from that official
    copy) and `warnings` (unofficial counts, csv mismatch) say what else is wrong."""
    if expect is not None and expect not in EXPECTED_SIDE:
        raise WoofError(f"--expect must be one of {', '.join(EXPECTED_SIDE)}, not {expect}")
    start = time.perf_counter()
    check_layout(root)
    files = image_files(root)
    report = VerifyReport(root, {s: {w: len(ps) for w, ps in per.items()} for s, per in files.items()}, decode)
    report.other_files = [str(p) for p in _other_files(root)]
    report.imagenet_val = sum(p.name.startswith(IMAGENET_VAL_PREFIX) for p in _flatten(files, "val"))

    paths = _flatten(files)
    infos = inspect_images(paths, decode=decode, workers=workers, progress=progress,
                           desc="decoding" if decode else "reading headers")
    report.corrupt = [(i.path, i.error) for i in infos if i.error]
    report.greyscale = [i.path for i in infos if i.mode == "L"]

    on_disk = {p.relative_to(root).as_posix() for p in paths}
    if expect:
        official = set(official_files())
        report.expect = expect
        report.official_missing = sorted(official - on_disk)
        report.official_extra = sorted(on_disk - official)
        side = EXPECTED_SIDE[expect]
        if side:
            report.wrong_size = [(i.path, min(i.width, i.height)) for i in infos
                                 if not i.error and min(i.width, i.height) != side]
    listed = _noisy_paths(root / NOISY_CSV)
    if listed is not None:
        report.noisy_csv, report.noisy_rows = True, len(listed)
        report.noisy_missing = sorted(on_disk - set(listed))
        report.noisy_extra = sorted(set(listed) - on_disk)
    report.seconds = time.perf_counter() - start
    return report


def _flatten(files: dict[str, dict[str, list[Path]]], split: str | None = None) -> list[Path]:
    return [p for s in SPLITS if split in (None, s) for w in WNIDS for p in files[s][w]]


def _noisy_paths(csv_path: Path) -> list[str] | None:
    """The `path` column of noisy_imagewoof.csv, or None when the file is missing or malformed."""
    try:
        with csv_path.open(newline="") as f:
            reader = csv.DictReader(f)
            if "path" not in (reader.fieldnames or []):
                return None
            return [row["path"] for row in reader]
    except (OSError, csv.Error, UnicodeDecodeError):
        return None


def format_verify(report: VerifyReport) -> str:
    lines = [f"Imagewoof at {report.root}", "", _class_table(report.counts), ""]
    for split, n in report.totals.items():
        expected = EXPECTED_COUNTS[split]
        flag = "matches the official split" if n == expected else f"official split: {expected:,}  MISMATCH"
        lines.append(f"{split + ':':6} {n:>6,} images ({flag})")
    checked = "decoded" if report.decoded else "headers read (--quick: not decoded)"
    lines.append(f"images {checked}: {sum(report.totals.values()):,}, corrupt: {len(report.corrupt)}")
    for path, reason in report.corrupt[:MAX_LISTED]:
        lines.append(f"  CORRUPT {path}: {reason}")
    if len(report.corrupt) > MAX_LISTED:
        lines.append(f"  ... and {len(report.corrupt) - MAX_LISTED} more")
    lines.append(f"greyscale images (mode L): {len(report.greyscale)}")
    lines.append(f"ImageNet-val-origin val images ({IMAGENET_VAL_PREFIX}*): {report.imagenet_val}"
                 + (f" (official: {EXPECTED_IMAGENET_VAL})" if report.official_counts else ""))
    if report.noisy_csv:
        match = "matches the files on disk" if not (report.noisy_missing or report.noisy_extra) else (
            f"{len(report.noisy_missing)} on disk but not listed, {len(report.noisy_extra)} listed but not on disk")
        lines.append(f"{NOISY_CSV}: {report.noisy_rows:,} rows, {match}")
        for kind, items in (("not listed", report.noisy_missing), ("not on disk", report.noisy_extra)):
            lines += [f"  {kind}: {p}" for p in items[:MAX_LISTED // 4]]
            if len(items) > MAX_LISTED // 4:
                lines.append(f"  ... and {len(items) - MAX_LISTED // 4} more {kind}")
    else:
        lines.append(f"{NOISY_CSV}: missing or unreadable")
    if report.expect:
        name = ARCHIVE_NAMES[report.expect]
        side = EXPECTED_SIDE[report.expect]
        lines.append(f"against the official {name} file list ({len(official_files()):,} files"
                     + (f", shorter side {side} px" if side else ", sizes not checked: originals vary") + "): "
                     + ("exact match" if not (report.official_missing or report.official_extra or report.wrong_size)
                        else f"{len(report.official_missing)} missing, {len(report.official_extra)} extra, "
                             f"{len(report.wrong_size)} of the wrong size"))
        for kind, items in (("MISSING", report.official_missing), ("EXTRA", report.official_extra),
                            ("WRONG SIZE", [f"{p} (shorter side {s} px)" for p, s in report.wrong_size])):
            lines += [f"  {kind} {p}" for p in items[:MAX_LISTED]]
            if len(items) > MAX_LISTED:
                lines.append(f"  ... and {len(items) - MAX_LISTED} more {kind.lower()}")
    lines += [f"warning: {w}" for w in report.warnings]
    verdict = "OK" if report.ok else "FAILED: " + "; ".join(report.errors)
    lines.append(f"{verdict} ({report.seconds:.1f} s)")
    return "\n".join(lines)


def _class_table(counts: dict[str, dict[str, int]]) -> str:
    rows = [f"{'wnid':10} {'breed':22} " + " ".join(f"{s:>6}" for s in counts)]
    for w in WNIDS:
        rows.append(f"{w:10} {BREEDS[w]:22} " + " ".join(f"{counts[s][w]:>6,}" for s in counts))
    return "\n".join(rows)
