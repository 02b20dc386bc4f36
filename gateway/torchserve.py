"""TorchServe client: one pooled requests.Session per process, bounded timeouts, errors as ApiError.

Every call carries TorchServe's token-authorisation key (woof.torchserve_keys: read from the key file
WOOF_TORCHSERVE_KEY_FILE, renewed before it expires; a refused key is renewed and the call sent once more).
Keys never appear in a log line or an error message."""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from woof.card import archive_card
from woof.torchserve_keys import INFERENCE, MANAGEMENT, TorchServeKeys, is_refusal

from .errors import ApiError

logger = logging.getLogger("gateway")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # a TorchServe model name; also keeps URLs safe


def valid_name(name: str) -> bool:
    return bool(NAME.match(name or ""))


class TorchServe:
    def __init__(self, url: str, mgmt_url: str, connect_timeout: float, read_timeout: float,
                 admin_timeout: float, pool_size: int, key_file: str | Path | None = None):
        self.url, self.mgmt_url = url, mgmt_url
        self.connect_timeout, self.read_timeout, self.admin_timeout = connect_timeout, read_timeout, admin_timeout
        self.keys = TorchServeKeys(key_file, mgmt_url, timeout=max(connect_timeout, 5.0))
        self.session = requests.Session()
        # no retries: a POST must not be sent twice, and the caller answers 503 at once instead
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def _call(self, kind: str, method: str, url: str, timeout: float, headers: dict | None = None,
              **kwargs) -> requests.Response:
        """One call with the `kind` key; a refused key is renewed and the call repeated once (TorchServe
        refuses before doing anything, so repeating a POST is safe). Still refused: 503."""
        def send(auth: dict[str, str]) -> requests.Response:
            return self._send(method, url, timeout, headers={**(headers or {}), **auth}, **kwargs)

        response = self.keys.call(kind, send, lambda r: is_refusal(r.status_code, r.content))
        if is_refusal(response.status_code, response.content):
            logger.warning("TorchServe refused the gateway's %s key (key file %s)", kind, self.keys.path)
            raise ApiError(503, "torchserve_unauthorized", "TorchServe refused the gateway's credentials",
                           retry_after=2)
        return response

    def _send(self, method: str, url: str, timeout: float, **kwargs) -> requests.Response:
        try:
            return self.session.request(method, url, timeout=(self.connect_timeout, timeout), **kwargs)
        except requests.ConnectTimeout:
            raise ApiError(503, "torchserve_unavailable", "TorchServe did not accept the connection in time",
                           retry_after=2) from None
        except requests.Timeout:
            raise ApiError(504, "torchserve_timeout", f"TorchServe did not answer within {timeout:g} s") from None
        except requests.ConnectionError:
            raise ApiError(503, "torchserve_unavailable", "TorchServe is not reachable", retry_after=2) from None

    def predict(self, model: str, body: bytes, request_id: str) -> requests.Response:
        return self._call(INFERENCE, "POST", f"{self.url}/predictions/{model}", self.read_timeout, data=body,
                          headers={"Content-Type": "application/octet-stream", "X-Request-Id": request_id})

    def ping(self) -> str | None:
        """/ping's status; None when TorchServe does not answer, "refused the key" when it refuses ours."""
        try:
            r = self._call(INFERENCE, "GET", f"{self.url}/ping", 2.0)
            return r.json().get("status")
        except ApiError as e:
            return "refused the key" if e.code == "torchserve_unauthorized" else None
        except (requests.RequestException, ValueError, AttributeError):
            return None

    def mgmt(self, method: str, path: str, params: dict | None = None, timeout: float | None = None
             ) -> tuple[int, Any]:
        r = self._call(MANAGEMENT, method, f"{self.mgmt_url}{path}", timeout or self.read_timeout, params=params)
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, {"message": r.text[:300]}

    def describe(self, name: str) -> list[dict] | None:
        """TorchServe's description of every version of `name`, or None when it is not registered."""
        if not valid_name(name):
            return None
        status, body = self.mgmt("GET", f"/models/{name}/all")
        if status == 404:
            return None
        if status != 200 or not isinstance(body, list):
            raise ApiError(503, "torchserve_error", f"TorchServe's management API answered HTTP {status}",
                           retry_after=2)
        return body

    def list_models(self) -> list[dict]:
        models, token = [], None
        while True:
            params = {"limit": 100, **({"next_page_token": token} if token else {})}
            status, body = self.mgmt("GET", "/models", params=params)
            if status != 200:
                raise ApiError(503, "torchserve_error", f"TorchServe's management API answered HTTP {status}",
                               retry_after=2)
            models += body.get("models", [])
            token = body.get("nextPageToken")
            if not token:
                return models


class KnownModels:
    """The model names TorchServe has registered, refreshed at most every `ttl` seconds (a miss refreshes
    once a second at most): metrics are labelled only with these, so a client's made-up `?model=` names
    cannot grow the label set without bound."""

    def __init__(self, torchserve: TorchServe, ttl: float = 5.0):
        self.torchserve, self.ttl = torchserve, ttl
        self._names: frozenset[str] = frozenset()
        self._fetched = 0.0
        self._lock = threading.Lock()

    def __contains__(self, name: str) -> bool:
        now = time.monotonic()
        age = now - self._fetched
        if age > self.ttl or (name not in self._names and age > 1.0):
            with self._lock:
                if time.monotonic() - self._fetched > min(age, 1.0):
                    try:
                        self._names = frozenset(m["modelName"] for m in self.torchserve.list_models())
                    except (ApiError, KeyError, TypeError):
                        pass  # TorchServe unreachable: keep the last list; the request itself will say so
                    self._fetched = time.monotonic()
        return name in self._names


def metric_label(name: str, known: KnownModels) -> str:
    return name if name in known else "unknown"


def ready_workers(versions: list[dict] | None) -> int:
    return sum(w.get("status") == "READY" for v in versions or [] for w in v.get("workers", []))


class CardCache:
    """card.json of each archive in the model store (a .mar is a zip), cached by file and mtime."""

    def __init__(self, store: str | Path):
        self.store = Path(store)
        self.cache: dict[str, tuple[float, dict | None]] = {}
        self.lock = threading.Lock()

    def card(self, mar_name: str) -> dict | None:
        path = self.store / Path(mar_name).name  # modelUrl is a file name in the store; never a path
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        with self.lock:
            hit = self.cache.get(path.name)
        if hit and hit[0] == mtime:
            return hit[1]
        card = archive_card(path)
        with self.lock:
            self.cache[path.name] = (mtime, card)
        return card


def card_fields(card: dict | None) -> dict:
    card = card or {}
    metrics = card.get("metrics") or {}

    def top1(key: str):
        value = metrics.get(key)
        return value.get("top1") if isinstance(value, dict) else None

    return {"name": card.get("name"), "version": card.get("version"), "architecture": card.get("architecture"),
            "format": (card.get("archive") or {}).get("format"),
            "input_size": (card.get("preprocessing") or {}).get("input_size"),
            "val_top1": top1("val"), "val_imagenet_subset_top1": top1("val_imagenet_val_subset"),
            # which copy of val the figures are on (cards before lite0 1.4.0 name none: the 160 px set)
            "val_set": metrics.get("val_set", "imagewoof2-160") if metrics else None}
