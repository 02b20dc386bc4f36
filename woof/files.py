"""Atomic files, the one way woof writes anything that must not be left half-written.

Every writer (cards, weights, training checkpoints, reports, plots, archives, the gateway's state, the bot's
chat store) writes a temporary file beside the target, flushes it to disk and renames it over the target:
readers and crashes see the old file or the new one, never half of one. A failure removes the temporary file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

READABLE = 0o644  # reports, cards, weights, archives: meant to be read by others
PRIVATE = 0o600  # the bot's chat store, the gateway's state


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int = READABLE) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that wants a file name (torch.save, savefig, an archiver).

    When the block ends without an exception the file gets `mode` and replaces `path`; otherwise it is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # on disk before the rename, so a power cut cannot leave an empty file
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int = READABLE) -> None:
    with atomic_path(path, mode) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str, mode: int = READABLE) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def atomic_write_json(path: str | os.PathLike, data: Any, mode: int = READABLE, **dump: Any) -> None:
    """JSON with a trailing newline; `dump` goes to json.dumps (indent=2 unless given)."""
    atomic_write_text(path, json.dumps(data, **{"indent": 2, **dump}) + "\n", mode)
