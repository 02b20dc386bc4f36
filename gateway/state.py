"""The default model and the A/B split, shared by every gunicorn worker through one small JSON file.

Writers take an exclusive flock on a lock file, read the current file, change it and replace it
atomically (temp file + fsync + os.replace), so readers see either the old or the new state, never a
half-written one. Readers stat the file per request and re-read it only when it changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
from pathlib import Path

from woof.files import PRIVATE, atomic_write_json


class StateFile:
    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "state.json"
        self.lock_path = self.dir / "state.lock"
        self._cache: tuple[tuple | None, dict] = (None, {})
        self._thread_lock = threading.Lock()  # flock is per open file; threads of one process need their own

    def read(self) -> dict:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        key = (st.st_ino, st.st_mtime_ns, st.st_size)  # os.replace gives a new inode
        cached_key, data = self._cache
        if key != cached_key:
            data = self._load()
            self._cache = (key, data)
        return data

    def _load(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    @contextlib.contextmanager
    def update(self):
        """Yields the current state as a dict to change; written atomically when the block ends."""
        with self._thread_lock, open(self.lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._load()
            yield data
            atomic_write_json(self.path, data, PRIVATE, indent=1, sort_keys=True)


def split_bucket(client_id: str) -> int:
    """0..9999, a stateless hash of the client id: the same client always lands in the same arm."""
    return int.from_bytes(hashlib.sha256(client_id.encode("utf-8", "surrogatepass")).digest()[:8], "big") % 10000


def choose_model(state: dict, default_model: str, client_id: str) -> tuple[str, str]:
    """(model, route) for a request that names no model: the split's arm, else the default."""
    split = state.get("split")
    if split:
        if split_bucket(client_id) < round(float(split["b_percent"]) * 100):
            return split["b"], "split-b"
        return split["a"], "split-a"
    return state.get("default") or default_model, "default"
