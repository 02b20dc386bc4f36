"""TorchServe 0.12's token-authorisation keys, for every woof client of TorchServe (gateway, scripts, tests).

With token authorisation on (config.properties), TorchServe's Java server writes `key_file.json` into the
directory it starts in (its working directory: `woof serve` picks it, scripts/serve.py), mode 0600:

    {"management": {"key": "...", "expiration time": "2026-12-02T14:10:53.846482317Z"},
     "inference": {"key": "...", "expiration time": "..."},
     "API": {"key": "..."}}

Every request carries `Authorization: Bearer <key>`: the inference key on the inference API (/ping too), the
management key on the management API. Those two expire (token_expiration_min, 60 by default); the API key
does not and only serves GET <management>/token?type=inference|management, which replaces that key and
rewrites the file. A missing, wrong or expired key is answered HTTP 400 {"type": "InvalidKeyException"}.
`torchserve --stop` deletes the file; each start writes new keys.

`TorchServeKeys` reads the file (again whenever it changes: a restarted TorchServe, a key another process
renewed), renews a key through /token shortly before it expires or once TorchServe refused it (serialised
across processes by a lock on the key file), and keeps the keys out of every message, repr and log line.
No key file (or an empty one) means no keys: requests go without a header, as token authorisation off needs.
"""

from __future__ import annotations

import calendar
import contextlib
import fcntl
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

KEY_FILE = "key_file.json"  # TorchServe's name; it lives in the server's working directory
KEY_FILE_ENV = "WOOF_TORCHSERVE_KEY_FILE"  # how woof serve tells the gateway (and scripts) where it is
INFERENCE, MANAGEMENT = "inference", "management"
MARGIN = 30.0  # renew a key this many seconds before it expires (at most a fifth of its lifetime)
_EXPIRY = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z$")

R = TypeVar("R")


def is_refusal(status: int, body: bytes | str | dict | None) -> bool:
    """Is this TorchServe's answer to a missing, wrong or expired key? (0.12: 400 InvalidKeyException;
    401/403 are taken as refusals too.)"""
    if status in (401, 403):
        return True
    if status != 400 or not body:
        return False
    if isinstance(body, dict):
        return body.get("type") == "InvalidKeyException"
    if isinstance(body, str):
        body = body.encode(errors="replace")
    return b'"InvalidKeyException"' in body[:400]


def parse_expiry(text: str | None) -> float | None:
    """Epoch seconds of a Java Instant ("2026-12-02T14:10:53.846482317Z"); None if unreadable."""
    match = _EXPIRY.match(text or "")
    if not match:
        return None
    seconds = calendar.timegm(time.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S"))
    return seconds + float(f"0.{match.group(2) or 0}")


@dataclass(frozen=True)
class _Key:
    secret: str = field(repr=False)
    expires: float | None  # epoch seconds; None = does not expire (the API key)


@dataclass(frozen=True)
class _Keys:
    signature: tuple  # (inode, mtime_ns, size) of the file they were read from
    written: float  # its mtime: about when the newest key was made
    keys: dict[str, _Key] = field(repr=False)


class TorchServeKeys:
    """The keys in one TorchServe's key_file.json. Thread-safe; one instance per process is enough.

    key_file: the file (None or "" = token authorisation off: no headers). management_url: that server's
    management API, needed to renew an expiring or refused key (without it the file is only re-read)."""

    def __init__(self, key_file: str | Path | None, management_url: str | None = None, timeout: float = 10.0,
                 margin: float = MARGIN):
        self.path = Path(key_file) if key_file else None
        self.management_url = management_url.rstrip("/") if management_url else None
        self.timeout, self.margin = timeout, margin
        self._cached: _Keys | None = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:  # never the keys
        return f"TorchServeKeys({str(self.path) if self.path else None!r})"

    # ------------------------------------------------------------ reading
    def _read(self) -> _Keys | None:
        """The file's keys (re-read when it changed since the last read); None when there is none (yet)."""
        if self.path is None:
            return None
        for attempt in range(5):
            try:
                st = self.path.stat()
            except OSError:
                self._cached = None
                return None
            signature = (st.st_ino, st.st_mtime_ns, st.st_size)
            cached = self._cached
            if cached is not None and cached.signature == signature:
                return cached
            if st.st_size == 0:  # woof serve creates it empty (mode 0600) for TorchServe to fill in
                return None
            try:
                data = json.loads(self.path.read_bytes())
                keys = {kind: _Key(str(data[kind]["key"]), parse_expiry(data[kind].get("expiration time")))
                        for kind in (INFERENCE, MANAGEMENT)}
                keys["API"] = _Key(str(data["API"]["key"]), None)
            except (OSError, ValueError, KeyError, TypeError):
                time.sleep(0.02 * (attempt + 1))  # TorchServe rewrites it in place: caught mid-write
                continue
            self._cached = _Keys(signature, st.st_mtime, keys)
            return self._cached
        return None

    def _due(self, keys: _Keys, kind: str) -> bool:
        """True when `kind`'s key expires within the margin (a fifth of its lifetime at most)."""
        expires = keys.keys[kind].expires
        if expires is None:
            return False
        margin = min(self.margin, max(0.0, expires - keys.written) / 5)
        return time.time() >= expires - margin

    def key(self, kind: str) -> str | None:
        """The current `kind` key ("inference" or "management"), renewed first when it is about to expire."""
        with self._lock:
            keys = self._read()
            if keys is None:
                return None
            if self.management_url and self._due(keys, kind):
                self.renew(kind, keys.keys[kind].secret)
                keys = self._read() or keys
            return keys.keys[kind].secret

    def headers(self, kind: str) -> dict[str, str]:
        """{"Authorization": "Bearer <key>"} for a request to the `kind` API; {} without keys."""
        key = self.key(kind)
        return {"Authorization": f"Bearer {key}"} if key else {}

    # ------------------------------------------------------------ renewing
    @contextlib.contextmanager
    def _file_lock(self):
        """An exclusive flock on the key file: one process renews while the others wait, then re-read.
        (TorchServe itself ignores it: it only rewrites the file when asked through /token.)"""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def renew(self, kind: str, rejected: str | None = None) -> bool:
        """Get a `kind` key other than `rejected` (the one TorchServe refused, or the one about to expire):
        the file's, when it changed already (a restart, another process), else a new one from /token.
        True when the file now holds a different key than `rejected`."""
        if self.path is None:
            return False
        with self._lock, self._file_lock():
            self._cached = None  # re-read under the lock
            keys = self._read()
            if keys is None:
                return False
            current = keys.keys[kind]
            if current.secret != rejected and not self._due(keys, kind):
                return True
            if not self.management_url:
                return False
            request = urllib.request.Request(f"{self.management_url}/token?type={kind}",
                                             headers={"Authorization": f"Bearer {keys.keys['API'].secret}"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as r:
                    r.read()
            except (OSError, ValueError):  # HTTPError included: a wrong API key (another TorchServe?)
                return False
            self._cached = None
            keys = self._read()
            return keys is not None and keys.keys[kind].secret != rejected

    def call(self, kind: str, send: Callable[[dict[str, str]], R], refused: Callable[[R], bool]) -> R:
        """send(headers) with the `kind` key; when TorchServe refuses it, renew it and send once more (a
        refused request did nothing, so a POST may be repeated). Returns the last answer."""
        headers = self.headers(kind)
        answer = send(headers)
        if self.path is not None and refused(answer):
            self.renew(kind, headers.get("Authorization", "").removeprefix("Bearer ") or None)
            again = self.headers(kind)
            if again and again != headers:
                answer = send(again)
        return answer

    def urlopen(self, kind: str, url: str, method: str = "GET", data: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30.0) -> tuple[int, bytes]:
        """(status, body) of a urllib request with the `kind` key (renewed and retried once if refused).
        Raises OSError (URLError) when nothing answers, as urllib does."""
        def send(auth: dict[str, str]) -> tuple[int, bytes]:
            request = urllib.request.Request(url, data=data, method=method, headers={**(headers or {}), **auth})
            try:
                with urllib.request.urlopen(request, timeout=timeout) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as e:
                with e:
                    return e.code, e.read()

        return self.call(kind, send, lambda answer: is_refusal(*answer))


def prepare_key_file(directory: str | Path) -> Path:
    """Before a TorchServe starts in `directory`: drop the key file one that died left behind and create an
    empty one, mode 0600, for the new server to fill in. (TorchServe creates it with the umask's mode and
    narrows it to 0600 only after writing the keys; an existing file keeps its mode, so no window opens.)"""
    path = Path(directory) / KEY_FILE
    path.unlink(missing_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return path


def no_keys() -> TorchServeKeys:
    """For a TorchServe with token authorisation off."""
    return TorchServeKeys(None)
