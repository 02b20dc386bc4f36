"""Async client of the woof gateway: POST /predict and GET /models, with timeouts and retries."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import httpx

log = logging.getLogger(__name__)

RETRY_STATUS = {502, 503, 504}
BUSY_CODES = {"rate_limited", "overloaded", "torchserve_busy"}  # the gateway's error codes for "too much now"


class GatewayError(Exception):
    """kind: unavailable (down, timing out, 5xx), busy (429), bad_image (400/415/422), too_large (413),
    unknown_model (404) or error (anything else)."""

    def __init__(self, kind: str, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.kind, self.status, self.retry_after = kind, status, retry_after


def _kind(status: int) -> str:
    if status == 404:
        return "unknown_model"
    if status == 413:
        return "too_large"
    if status in (400, 415, 422):
        return "bad_image"
    if status == 429:
        return "busy"
    if status in RETRY_STATUS or status >= 500:
        return "unavailable"
    return "error"


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


@dataclass
class ModelInfo:
    name: str
    version: str
    default: bool
    architecture: str | None
    input_size: int | None
    val_top1: float | None
    val_top1_subset: float | None


def _number(value):
    if isinstance(value, dict):  # {"acc": 0.956, ...} or {"top1": ...}
        value = next((value[k] for k in ("acc", "top1", "accuracy", "value") if k in value), None)
    return value if isinstance(value, (int, float)) else None


def parse_models(payload) -> list[ModelInfo]:
    """The gateway's GET /models answer, read leniently (a list, or {"models": [...]})."""
    items = payload.get("models", []) if isinstance(payload, dict) else payload
    if isinstance(items, dict):  # {"name": {...}}
        items = [{"name": k, **v} for k, v in items.items()]
    out = []
    for m in items or []:
        if not isinstance(m, dict) or not m.get("name"):
            continue
        card = m.get("card") if isinstance(m.get("card"), dict) else {}

        def get(*keys, m=m, card=card):
            return next((src[k] for k in keys for src in (m, card) if src.get(k) is not None), None)

        metrics = card.get("metrics") if isinstance(card.get("metrics"), dict) else {}
        out.append(ModelInfo(
            name=str(m["name"]),
            version=str(get("version", "model_version") or "?"),
            default=bool(get("default", "is_default")),
            architecture=get("architecture"),
            input_size=_number(get("input_size")),
            val_top1=_number(get("val_top1", "top1_val", "val_acc") or metrics.get("val")),
            val_top1_subset=_number(get("val_imagenet_subset_top1", "val_top1_imagenet_val_subset")
                                    or metrics.get("val_imagenet_val_subset")),
        ))
    return out


class GatewayClient:
    def __init__(self, base_url: str, timeout: float = 30.0, connect_timeout: float = 3.0, attempts: int = 3,
                 backoff: float = 0.4):
        self.base_url = base_url.rstrip("/")
        self.attempts, self.backoff = max(1, attempts), backoff
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=connect_timeout, pool=connect_timeout),
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
            headers={"User-Agent": "woof-telegram-bot"},
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs) -> dict:
        last: GatewayError | None = None
        for attempt in range(self.attempts):
            if attempt:
                wait = self.backoff * 2 ** (attempt - 1)
                if last is not None and last.retry_after:
                    wait = max(wait, min(last.retry_after, 5.0))
                await asyncio.sleep(wait)
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TimeoutException as e:
                last = GatewayError("unavailable", f"gateway timed out ({type(e).__name__})")
                continue
            except httpx.TransportError as e:
                last = GatewayError("unavailable", f"gateway unreachable ({type(e).__name__}: {e})")
                continue
            if response.status_code < 400:
                try:
                    return response.json()
                except ValueError:
                    raise GatewayError("error", f"gateway answered {response.status_code} without JSON",
                                       response.status_code) from None
            code, message = None, f"HTTP {response.status_code}"
            try:
                detail = response.json()["error"]
                code = detail.get("code")
                message = f"HTTP {response.status_code} {code}: {detail.get('message', '')}"
            except (ValueError, KeyError, TypeError, AttributeError):
                pass
            kind = "busy" if code in BUSY_CODES else _kind(response.status_code)
            last = GatewayError(kind, message, response.status_code, _retry_after(response))
            if response.status_code not in RETRY_STATUS:
                raise last
        raise last

    async def predict(self, image: bytes, filename: str, content_type: str, client: str,
                      model: str | None = None, top_k: int = 3) -> dict:
        params = {"top_k": top_k}
        if model:
            params["model"] = model
        return await self._request("POST", "/predict", params=params, headers={"X-Client-Id": client},
                                   files={"file": (filename, image, content_type)})

    async def models(self) -> list[ModelInfo]:
        return parse_models(await self._request("GET", "/models"))
