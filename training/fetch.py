"""`woof data fetch`: download (or take a local copy of) the official imagewoof2 archive and unpack it safely."""

from __future__ import annotations

import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

from woof.errors import WoofError

from .data import (
    ENV_DATA_ROOT,
    SPLITS,
    check_layout,
)

ARCHIVE_URL = "https://s3.amazonaws.com/fast-ai-imageclas/{name}.tgz"
ARCHIVE_NAMES = {"160": "imagewoof2-160", "320": "imagewoof2-320", "full": "imagewoof2"}
CONNECT_TIMEOUT = 15  # seconds; also the longest a stalled read may wait




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
