"""`woof data`: fetch, verify and describe Imagewoof.

    woof data fetch  [--size 160|320|full] [--dest DIR] [--from PATH]   get the official archive
    woof data verify [--data PATH] [--quick] [--expect 160|320|full]     check layout, counts, images
    woof data stats  [--data PATH] [--out DIR]                           class balance, sizes, plots

The work is done by small functions (`fetch`, `verify`, `stats`, `write_stats`); the `cmd_*`
functions only parse flags and print.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import multiprocessing
import os
import shutil
import statistics
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .breeds import BREEDS, WNIDS
from .data import (
    ENV_DATA_ROOT,
    EXPECTED_COUNTS,
    IMAGE_SUFFIXES,
    IMAGENET_VAL_PREFIX,
    SPLITS,
    check_layout,
    resolve_root,
)
from .errors import WoofError

ARCHIVE_URL = "https://s3.amazonaws.com/fast-ai-imageclas/{name}.tgz"
ARCHIVE_NAMES = {"160": "imagewoof2-160", "320": "imagewoof2-320", "full": "imagewoof2"}
CONNECT_TIMEOUT = 15  # seconds; also the longest a stalled read may wait
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
def fetch(size: str = "160", dest: str | os.PathLike = "data", source: str | os.PathLike | None = None,
          url: str | None = None, progress: bool = True, log=print) -> Path:
    """Get Imagewoof and return its root folder (which passes `check_layout`).

    source=None downloads the official fast.ai archive (or `url`); a folder is checked and used
    in place; a .tgz/.tar file is checked and unpacked into `dest`. Nothing partial is left behind.
    """
    if size not in ARCHIVE_NAMES:
        raise WoofError(f"--size must be one of {', '.join(ARCHIVE_NAMES)}, not {size}")
    dest = Path(dest).expanduser()
    if source is not None:
        source = Path(source).expanduser()
        if source.is_dir():
            root = find_root(source)
            log(f"using {root} in place (nothing copied)")
            return root
        if not source.exists():
            raise WoofError(f"--from {source}: no such file or folder "
                            "(give an imagewoof2 folder or its .tgz archive)")
        return unpack_archive(source, dest, progress=progress, log=log)

    name = ARCHIVE_NAMES[size]
    target = dest / name
    if target.exists():
        check_layout(target)
        log(f"{target} is already there (remove it to fetch again)")
        return target
    url = url or ARCHIVE_URL.format(name=name)
    created = _mkdir(dest)
    fd, part = tempfile.mkstemp(dir=dest, prefix=f".{name}.", suffix=".tgz.part")
    os.close(fd)
    try:
        download(url, Path(part), progress=progress, log=log)
        return unpack_archive(Path(part), dest, name=name, progress=progress, log=log)
    finally:
        Path(part).unlink(missing_ok=True)
        if created:
            _rmdir_if_empty(dest)


def download(url: str, path: Path, progress: bool = True, log=print) -> None:
    """Stream `url` to `path` with a progress bar; fail fast with a one-line WoofError."""
    from tqdm import tqdm

    log(f"downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT) as response, path.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=path.name[1:].split(".")[0],
                      disable=not progress) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        if total is not None and path.stat().st_size != total:
            raise WoofError(f"download of {url} stopped early: got {path.stat().st_size:,} of {total:,} bytes")
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise WoofError(
            f"download of {url} failed ({reason}); this machine may be offline. Put a local copy in place "
            f"with `woof data fetch --from PATH` (an imagewoof2 folder or .tgz), or set {ENV_DATA_ROOT} "
            "to an existing copy") from None


def unpack_archive(archive: Path, dest: Path, name: str | None = None, progress: bool = True, log=print) -> Path:
    """Check that `archive` is an Imagewoof tar, unpack it safely into dest/<name>, return that folder.

    Unpacks into a hidden temporary folder inside `dest` and renames it into place at the end, so a
    failure leaves nothing half-unpacked. tarfile's "data" filter refuses absolute paths, `..`,
    links out of the folder and device files.
    """
    from tqdm import tqdm

    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise WoofError(f"{archive} is not a readable tar archive ({e})") from None
    with tar:
        log(f"checking {archive.name}")
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise WoofError(f"{archive} is damaged or truncated ({e})") from None
        prefix = archive_root(m.name for m in members)
        name = prefix or name or _strip_archive_suffix(archive.name)
        target = dest / name
        if target.exists():
            raise WoofError(f"{target} already exists: remove it first, or use it with {ENV_DATA_ROOT}={target}")
        created = _mkdir(dest)
        tmp = Path(tempfile.mkdtemp(dir=dest, prefix=f".{name}.unpack-"))
        try:
            for member in tqdm(members, desc="unpacking", unit="file", disable=not progress):
                tar.extract(member, tmp, filter="data")
            root = tmp / prefix if prefix else tmp
            check_layout(root)
            root.rename(target)
        except tarfile.FilterError as e:
            raise WoofError(f"{archive} holds an unsafe entry, refusing to unpack it ({e})") from None
        except (tarfile.TarError, OSError, EOFError) as e:
            raise WoofError(f"unpacking {archive} failed ({e})") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if created and not target.exists():
                _rmdir_if_empty(dest)
    log(f"unpacked to {target}")
    return target


def archive_root(names) -> str:
    """The folder inside an archive that holds train/ and val/ ('' when they sit at the top)."""
    tops: dict[str, set[str]] = {}
    for raw in names:
        parts = [p for p in PurePosixPath(raw).parts if p not in (".", "")]
        if len(parts) >= 2 and parts[0] in SPLITS:
            tops.setdefault("", set()).add(parts[0])
        if len(parts) >= 3 and parts[1] in SPLITS:
            tops.setdefault(parts[0], set()).add(parts[1])
    roots = [top for top, splits in tops.items() if splits == set(SPLITS)]
    if len(roots) != 1:
        raise WoofError("the archive is not Imagewoof: expected one folder holding train/<wnid>/ and val/<wnid>/"
                        if not roots else f"the archive holds several datasets ({', '.join(sorted(roots))})")
    return roots[0]


def find_root(folder: Path) -> Path:
    """`folder` itself if it holds train/ and val/, else its single imagewoof2* subfolder that does."""
    if not all((folder / s).is_dir() for s in SPLITS):
        inner = [p for p in sorted(folder.iterdir()) if p.is_dir() and all((p / s).is_dir() for s in SPLITS)]
        if len(inner) == 1:
            folder = inner[0]
    check_layout(folder)
    return folder


def _strip_archive_suffix(filename: str) -> str:
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return filename + ".unpacked"


def _mkdir(path: Path) -> bool:
    """Create path (and parents); True if this call created it."""
    if path.is_dir():
        return False
    try:
        path.mkdir(parents=True)
    except OSError as e:
        raise WoofError(f"cannot create {path}: {e.strerror}") from None
    return True


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


# ================================================================ looking at images
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

    from .preprocess import ImageError, load_image

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


# ================================================================ stats
def stats(root: Path, workers: int = 1, progress: bool = False) -> dict:
    """Class balance, image sizes (from headers) and colour modes of an Imagewoof folder."""
    check_layout(root)
    files = image_files(root)
    out = {"root": str(root), "counts": {}, "greyscale": {}, "modes": {}, "sizes": {}, "unreadable": [],
           "imagenet_val": sum(p.name.startswith(IMAGENET_VAL_PREFIX) for p in _flatten(files, "val"))}
    for split in SPLITS:
        out["counts"][split] = {w: len(files[split][w]) for w in WNIDS}
        infos = inspect_images(_flatten(files, split), decode=False, workers=workers, progress=progress,
                               desc=f"reading {split}")
        good = [i for i in infos if not i.error]
        out["unreadable"] += [i.path for i in infos if i.error]
        out["greyscale"][split] = sum(i.mode == "L" for i in good)
        out["modes"][split] = dict(Counter(i.mode for i in good).most_common())
        out["sizes"][split] = [(i.width, i.height) for i in good]
    return out


def write_stats(st: dict, out_dir: Path) -> list[Path]:
    """data_stats.md plus PNG plots into out_dir; returns the files written."""
    from .card import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = _plot_stats(st, out_dir)
    md = out_dir / "data_stats.md"
    atomic_write_text(md, stats_markdown(st, [p.name for p in pngs]))
    md.chmod(0o644)  # atomic_write_text's temporary file is private (0600); a report is for reading
    return [md, *pngs]


def stats_markdown(st: dict, images: list[str] = ()) -> str:
    counts, splits = st["counts"], list(st["counts"])
    lines = ["# Imagewoof data statistics", "", f"Data: `{st['root']}`", "", "## Class balance", "",
             "| # | breed | wnid | " + " | ".join(splits) + " | total | share of train |",
             "|---|---|---|" + "---:|" * (len(splits) + 2)]
    train_total = sum(counts["train"].values()) or 1
    for i, w in enumerate(WNIDS):
        row = [counts[s][w] for s in splits]
        lines.append(f"| {i} | {BREEDS[w]} | {w} | " + " | ".join(f"{n:,}" for n in row)
                     + f" | {sum(row):,} | {counts['train'][w] / train_total:.1%} |")
    totals = [sum(counts[s].values()) for s in splits]
    lines.append("| | **total** | | " + " | ".join(f"**{n:,}**" for n in totals) + f" | **{sum(totals):,}** | |")
    lines += ["", "Official imagewoof2 split: " + ", ".join(f"{s} {n:,}" for s, n in EXPECTED_COUNTS.items()) + ".",
              f"ImageNet-val-origin val images (`{IMAGENET_VAL_PREFIX}*`): {st['imagenet_val']}.", ""]

    lines += ["## Colour modes", "", "| split | greyscale (L) | all modes |", "|---|---:|---|"]
    for s in splits:
        modes = ", ".join(f"{m}: {n:,}" for m, n in st["modes"][s].items())
        lines.append(f"| {s} | {st['greyscale'][s]:,} | {modes} |")
    lines.append(f"| all | {sum(st['greyscale'].values()):,} | |")
    lines += ["", "Greyscale files are converted to RGB when loaded (`training.preprocess.load_image`).", ""]

    lines += ["## Image sizes (pixels, from the file headers)", "",
              "| split | measure | min | median | mean | max |", "|---|---|---:|---:|---:|---:|"]
    for s in splits:
        sizes = st["sizes"][s]
        if not sizes:
            continue
        measures = {"width": [w for w, _ in sizes], "height": [h for _, h in sizes],
                    "shorter side": [min(w, h) for w, h in sizes], "longer side": [max(w, h) for w, h in sizes]}
        for name, values in measures.items():
            lines.append(f"| {s} | {name} | {min(values)} | {statistics.median(values):g} | "
                         f"{statistics.fmean(values):.1f} | {max(values)} |")
    every = [wh for s in splits for wh in st["sizes"][s]]
    if every:
        lines += ["", "Most common sizes (width x height):", "", "| size | images |", "|---|---:|"]
        lines += [f"| {w}x{h} | {n:,} |" for (w, h), n in Counter(map(tuple, every)).most_common(10)]
        portrait = sum(h > w for w, h in every)
        lines += ["", f"Landscape {sum(w > h for w, h in every):,}, portrait {portrait:,}, "
                      f"square {sum(w == h for w, h in every):,}."]
    if st["unreadable"]:
        lines += ["", f"**{len(st['unreadable'])} unreadable file(s)** (run `woof data verify`):", ""]
        lines += [f"- `{p}`" for p in st["unreadable"][:MAX_LISTED]]
    if images:
        lines += ["", "## Plots", ""] + [f"![{Path(name).stem}]({name})" for name in images]
    return "\n".join(lines) + "\n"


def _plot_stats(st: dict, out_dir: Path) -> list[Path]:
    try:
        from matplotlib.figure import Figure  # object API: no pyplot state, no global backend switch
    except ImportError:
        print("warning: matplotlib is not installed (pip install 'woof[training]'); plots skipped")
        return []
    written = []
    names = [BREEDS[w] for w in WNIDS]
    for split, counts in st["counts"].items():
        fig = Figure(figsize=(8, 4.5), layout="constrained")
        ax = fig.add_subplot()
        values = [counts[w] for w in WNIDS]
        bars = ax.barh(names[::-1], values[::-1], color="tab:blue")
        ax.bar_label(bars, padding=3, fontsize=8)
        ax.set_xlabel("images")
        ax.set_title(f"Imagewoof {split}: images per breed (total {sum(values):,})")
        ax.set_xlim(0, max(values + [1]) * 1.12)
        written.append(_save(fig, out_dir / f"class_balance_{split}.png"))

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    scatter, hist = fig.subplots(1, 2)
    for split, color in zip(st["sizes"], ("tab:blue", "tab:orange")):
        sizes = st["sizes"][split]
        if sizes:
            scatter.scatter([w for w, _ in sizes], [h for _, h in sizes], s=4, alpha=0.3, color=color, label=split)
    scatter.set_xlabel("width (px)")
    scatter.set_ylabel("height (px)")
    scatter.set_title("image sizes")
    scatter.legend(markerscale=3)
    every = [wh for s in st["sizes"] for wh in st["sizes"][s]]
    if every:
        hist.hist([[min(wh) for wh in every], [max(wh) for wh in every]], bins=40,
                  label=["shorter side", "longer side"])
        hist.set_yscale("log")
    hist.set_xlabel("pixels")
    hist.set_ylabel("images (log scale)")
    hist.set_title("shorter and longer side, both splits")
    hist.legend()
    written.append(_save(fig, out_dir / "image_sizes.png"))
    return written


def _save(fig, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # render with Agg whatever the session's default backend is
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=110, format="png")
    os.replace(tmp, path)
    return path


# ================================================================ CLI
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
