"""`woof bench`: the served archives side by side — accuracy through TorchServe, load, in-process speed.

One TorchServe hosts every chosen archive (1 worker each; the handler reads WOOF_THREADS). Either
`woof bench` starts its own on free loopback ports with a private temp folder and registers the
archives through the management API, or it uses a running one (`--url`/`--mgmt-url`, its keys from
`--key-file`, default $WOOF_TORCHSERVE_KEY_FILE or key_file.json where `woof serve` runs TorchServe),
registering only the archives that server lacks and unregistering just those afterwards. Every call carries
TorchServe's token-authorisation key (woof.torchserve_keys), renewed when it expires or is refused.

For each archive, one at a time while the others sit idle:

1. accuracy **through TorchServe**: every val image (or `--limit-per-class N` per class) is posted as
   JPEG bytes; top-1 on full val and on the 162 ImageNet-val-origin images, with 95 % Wilson CIs;
2. load: `--concurrency` client threads, each with its own keep-alive HTTP connection, post distinct
   val JPEGs held in memory, for `--duration` seconds and/or `--requests` requests: requests/s,
   p50/p95/p99 latency (client side, request sent to response read), errors;
3. the bare model in-process for reference: the archive's own model file (TorchScript module or
   onnxruntime session), batch 32 of preprocessed val images, at 1 and 2 threads.

`--phone-size` adds one load run with ~12-megapixel JPEGs (val photos upscaled to 4000x3000,
quality 90) against the most accurate archive. Writes bench.md, bench.csv, bench.png and
bench_predictions.csv (every accuracy-pass answer) to `--out` (default reports/).

The HTTP client is the standard library's http.client: one persistent connection per thread does
what a requests.Session per thread would, without another dependency, and costs the client less CPU
on a 2-core machine where the client competes with the server.
"""

from __future__ import annotations

import csv
import http.client
import io
import itertools
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from handlers.archive import ARCHIVES, MODEL_STORE, REPO
from training.checkpoint import hardware
from training.data import list_samples, resolve_root, subset_per_class
from training.evaluate import accuracy_entry, fmt_acc
from training.export import image_batch, ort_session, pick_images
from woof.card import archive_card
from woof.errors import WoofError
from woof.files import atomic_path, atomic_write_text
from woof.torchserve_keys import INFERENCE, KEY_FILE_ENV, MANAGEMENT, TorchServeKeys, is_refusal

from .serve import (
    CONFIG,
    check_java,
    key_file,
    model_ready,
    ping,
    render_config,
    server_keys,
    start_torchserve,
    stop_torchserve,
    torchserve_command,
    torchserve_dir,
)

DEFAULT_OUT = REPO / "reports"
CONCURRENCY = 8
DURATION = 30.0  # seconds of load per archive when neither --duration nor --requests is given
QUICK_DURATION = 3.0
LOAD_IMAGES = 200  # distinct val JPEGs the load rotates through
PHONE_IMAGES = 8
PHONE_SIZE = (4000, 3000)
PHONE_QUALITY = 90
INPROC_BATCH = 32
INPROC_SECONDS = 5.0
REQUEST_TIMEOUT = 120.0
REGISTER_TIMEOUT = 300.0
SERIALIZED = {"torchscript": "model.pt", "onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
ORIGINAL_RPS_NOTE = ("The seed project's original \"rps\" figure was val batches per second (batch 100) "
                     "in-process, not HTTP requests; the requests/s here are HTTP requests (one image each) "
                     "through TorchServe, and images/s in-process is the closest thing to the old figure.")


# ---------------------------------------------------------------- archives
@dataclass
class Archive:
    name: str
    path: Path
    card: dict[str, Any]

    @property
    def fmt(self) -> str:
        return self.card.get("archive", {}).get("format", "?")

    @property
    def size_mb(self) -> float:
        return self.path.stat().st_size / 1e6

    @property
    def parameters(self) -> int | None:
        return self.card.get("parameters")


def find_archives(store: Path, names: list[str] | None) -> list[Archive]:
    """The archives to benchmark: `names` from `store`, or every fixed-name archive present there."""
    store = Path(store)
    if names:
        missing = [n for n in names if not (store / f"{n}.mar").is_file()]
        if missing:
            raise WoofError(f"no archive {', '.join(f'{n}.mar' for n in missing)} in {store} "
                            f"(build it with: woof archive {' '.join(missing)})")
    else:
        names = [n for n in ARCHIVES if (store / f"{n}.mar").is_file()]
        if not names:
            raise WoofError(f"no archives to benchmark in {store}: none of {', '.join(n + '.mar' for n in ARCHIVES)} "
                            "exists (build them with: woof archive --all)")
    found = []
    for name in names:
        card = archive_card(store / f"{name}.mar")
        if card is None or "archive" not in card:
            raise WoofError(f"{store / name}.mar is not a woof archive (no card.json with an archive section)")
        found.append(Archive(name, store / f"{name}.mar", card))
    return found


# ---------------------------------------------------------------- HTTP
def _json(method: str, url: str, timeout: float = 30.0, keys: TorchServeKeys | None = None) -> tuple[int, Any]:
    """(status, JSON body or text) of a management call with `keys`' management key."""
    status, body = (keys or TorchServeKeys(None)).urlopen(MANAGEMENT, url, method=method, timeout=timeout)
    try:
        return status, json.loads(body or b"null")
    except ValueError:
        return status, body.decode(errors="replace")


def default_key_file() -> Path:
    """The key file of a TorchServe this script did not start: $WOOF_TORCHSERVE_KEY_FILE, else where
    `woof serve` runs TorchServe (the repository root, or $WOOF_TORCHSERVE_DIR)."""
    return Path(os.environ.get(KEY_FILE_ENV) or key_file(torchserve_dir(CONFIG)))


class Client:
    """One keep-alive HTTP/1.1 connection (one per thread; http.client is not thread-safe). With `keys`
    (TorchServe's inference API) each request carries the inference key, renewed and resent once if refused."""

    def __init__(self, base_url: str, timeout: float = REQUEST_TIMEOUT, keys: TorchServeKeys | None = None):
        parts = urllib.parse.urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.keys = keys
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes, content_type: str = "image/jpeg",
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """(status, body); raises OSError/HTTPException on a transport failure (and drops the connection)."""
        if self.keys is None:
            return self._post(path, body, content_type, headers)
        return self.keys.call(INFERENCE, lambda auth: self._post(path, body, content_type, {**(headers or {}), **auth}),
                              lambda answer: is_refusal(*answer))

    def _post(self, path: str, body: bytes, content_type: str, headers: dict[str, str] | None) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.conn.request("POST", self.prefix + path, body=body, headers={
                "Content-Type": content_type, "Content-Length": str(len(body)), **(headers or {})})
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, data

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class ClientPool:
    """A thread-local Client for the threads of a ThreadPoolExecutor; closes them all at the end."""

    def __init__(self, base_url: str, keys: TorchServeKeys | None = None):
        self.base_url, self.local, self.clients, self.lock = base_url, threading.local(), [], threading.Lock()
        self.keys = keys

    def get(self) -> Client:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = Client(self.base_url, keys=self.keys)
            with self.lock:
                self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()


# ---------------------------------------------------------------- TorchServe
def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Server:
    """TorchServe for the benchmark: started here (and stopped) or an existing one (left running)."""

    def __init__(self, store: Path, url: str | None = None, mgmt_url: str | None = None,
                 timeout: float = 180.0, log=print, workers: int = 1, batch_size: int = 1,
                 max_batch_delay: int = 0, key_file: str | Path | None = None):
        self.store, self.timeout, self.log = Path(store).resolve(), timeout, log
        self.workers, self.batch_size, self.max_batch_delay = workers, batch_size, max_batch_delay
        self.url, self.mgmt = url, mgmt_url
        # a running server's keys (--key-file); one started here gets its own in _start
        self.keys = TorchServeKeys(key_file or default_key_file(), mgmt_url) if url else TorchServeKeys(None)
        self.env: dict[str, str] | None = None
        self.base: Path | None = None
        self.registered: list[str] = []  # what this run registered on a server it did not start
        self.threads = os.environ.get("WOOF_THREADS", "1")

    @property
    def started_here(self) -> bool:
        return self.env is not None

    def __enter__(self) -> Server:
        if self.url:
            if not self.mgmt:
                raise WoofError("--url needs --mgmt-url too (the management API registers the archives)")
            status = ping(self.url, keys=self.keys)
            if status is None:
                raise WoofError(f"no TorchServe answers at {self.url}/ping")
            if status.startswith("HTTP 4"):
                raise WoofError(f"TorchServe at {self.url} refuses the inference key from {self.keys.path} "
                                f"(/ping: {status}); --key-file names that server's key_file.json")
            return self
        self._start()
        return self

    def _start(self) -> None:
        torchserve_command()
        check_java()
        self.base = Path(tempfile.mkdtemp(prefix="woof-bench-"))
        inference, management, metrics, grpc_inference, grpc_management = free_ports(5)
        config = render_config(CONFIG, self.base / "config.properties", {
            "inference_address": f"http://127.0.0.1:{inference}",
            "management_address": f"http://127.0.0.1:{management}",
            "metrics_address": f"http://127.0.0.1:{metrics}",
            "grpc_inference_port": str(grpc_inference),
            "grpc_management_port": str(grpc_management),
            "model_store": str(self.store),
            "load_models": "",  # registered one by one through the management API
            "enable_model_api": "true",
        })
        self.env = {"TMPDIR": str(self.base), "TEMP": str(self.base), "LOG_LOCATION": str(self.base / "logs"),
                    "METRICS_LOCATION": str(self.base / "logs"), "WOOF_THREADS": self.threads}
        self.url, self.mgmt = f"http://127.0.0.1:{inference}", f"http://127.0.0.1:{management}"
        self.keys = server_keys(config, self.base)
        try:
            start_torchserve(config, cwd=self.base, env=self.env, timeout=self.timeout, log=self.log, tied=True)
        except BaseException:
            self._stop(keep_logs=True)
            raise

    def is_registered(self, name: str) -> bool:
        status, _ = _json("GET", f"{self.mgmt}/models/{name}", keys=self.keys)
        return status == 200

    def register(self, archive: Archive) -> None:
        """Register `archive` with this run's workers and batching (waits until the workers are up); a
        server that already serves that name is left as it is."""

        if self.is_registered(archive.name):
            deadline = time.monotonic() + self.timeout
            while not model_ready(self.mgmt, archive.name, keys=self.keys):
                if time.monotonic() > deadline:
                    raise WoofError(f"{archive.name} is registered at {self.mgmt} but has no READY worker")
                time.sleep(0.5)
            self.log(f"{archive.name}: already served at {self.url}")
            return
        query = urllib.parse.urlencode({"url": archive.path.name, "model_name": archive.name,
                                        "initial_workers": self.workers, "synchronous": "true",
                                        "batch_size": self.batch_size, "max_batch_delay": self.max_batch_delay})
        start = time.perf_counter()
        status, body = _json("POST", f"{self.mgmt}/models?{query}", timeout=REGISTER_TIMEOUT, keys=self.keys)
        if status != 200:
            message = body.get("message", body) if isinstance(body, dict) else body
            where = f"; logs: {self.env['LOG_LOCATION']}" if self.env else ""
            raise WoofError(f"TorchServe did not register {archive.path.name} (HTTP {status}: {message})"
                            + (" - the archive must be in that server's model_store" if not self.env else "")
                            + where)
        if not self.started_here:
            self.registered.append(archive.name)
        self.log(f"{archive.name}: registered ({archive.fmt}, {self.workers} worker(s), batch {self.batch_size}, "
                 f"{time.perf_counter() - start:.0f} s)")

    def __exit__(self, *exc) -> None:
        for name in self.registered:
            status, body = _json("DELETE", f"{self.mgmt}/models/{name}", timeout=60, keys=self.keys)
            if status != 200:
                self.log(f"warning: could not unregister {name} (HTTP {status}: {body})")
        self.registered = []
        if self.started_here:
            self._stop(keep_logs=exc[0] is not None)

    def _stop(self, keep_logs: bool) -> None:
        try:
            stop_torchserve(self.env, cwd=self.base)
        finally:
            if keep_logs:
                print(f"TorchServe logs kept in {self.base / 'logs'}", file=sys.stderr)
            else:
                shutil.rmtree(self.base, ignore_errors=True)
            self.env = None


# ---------------------------------------------------------------- accuracy through TorchServe
def _top1(data: bytes) -> tuple[str, str, str]:
    """(top-1 wnid, model name, model version) of a handler answer."""
    answer = json.loads(data)
    return answer["top_k"][0]["wnid"], answer["model"], answer["model_version"]


def accuracy_pass(client_url: str, archive: Archive, samples, concurrency: int, progress: bool,
                  keys: TorchServeKeys | None = None) -> list[dict]:
    """Post every sample's JPEG to TorchServe; one row per sample (prediction or error), in order."""
    from tqdm import tqdm

    pool = ClientPool(client_url, keys)
    path = f"/predictions/{archive.name}"

    def one(sample) -> dict[str, Any]:
        body = sample.path.read_bytes()
        error = ""
        for _ in range(2):  # one retry: a transport hiccup is not the model's mistake
            try:
                status, data = pool.get().post(path, body)
            except (OSError, http.client.HTTPException) as e:
                error = f"{type(e).__name__}: {e}"
                continue
            if status == 200:
                try:
                    wnid, model, version = _top1(data)
                except (ValueError, KeyError, IndexError, TypeError):
                    return {"predicted": "", "error": f"unreadable answer {data[:80]!r}"}
                return {"predicted": wnid, "error": "", "served": (model, version)}
            error = f"HTTP {status}: {data[:120].decode(errors='replace')}"
        return {"predicted": "", "error": error}

    rows: list[dict[str, Any]] = [{}] * len(samples)
    try:
        with ThreadPoolExecutor(concurrency) as executor, \
                tqdm(total=len(samples), desc=f"{archive.name} accuracy", unit="img", disable=not progress,
                     file=sys.stderr) as bar:
            futures = {executor.submit(one, s): i for i, s in enumerate(samples)}
            for future in as_completed(futures):
                rows[futures[future]] = future.result()
                bar.update()
    finally:
        pool.close()
    served = {r.pop("served") for r in rows if "served" in r}
    expected = (archive.card["name"], str(archive.card["version"]))
    if served and served != {expected}:
        raise WoofError(f"the server's {archive.name} answers as {sorted(served)}, but {archive.path} holds "
                        f"{expected[0]} {expected[1]}: it serves another archive under that name")
    return rows


def accuracy_figures(samples, rows: list[dict]) -> dict[str, Any]:
    hit = np.array([r["predicted"] == s.wnid for s, r in zip(samples, rows)], dtype=bool)
    mask = np.array([s.from_imagenet_val for s in samples], dtype=bool)
    return {"val": accuracy_entry(int(hit.sum()), len(hit)),
            "subset": accuracy_entry(int(hit[mask].sum()), int(mask.sum())),
            "errors": sum(1 for r in rows if r["error"])}


def quick_samples(samples) -> list:
    """--quick: two val images per class, the first ImageNet-val-origin one and the first other one."""
    chosen, seen = [], set()
    for s in samples:
        if (s.label, s.from_imagenet_val) not in seen:
            seen.add((s.label, s.from_imagenet_val))
            chosen.append(s)
    return chosen


# ---------------------------------------------------------------- load
@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    first_error: str = ""

    @property
    def rps(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else None


def run_load(url: str, model: str, bodies: list[bytes], concurrency: int, duration: float | None,
             requests: int | None, keys: TorchServeKeys | None = None) -> LoadResult:
    """`concurrency` threads, each with its own keep-alive connection, post `bodies` in rotation
    until `duration` seconds have passed or `requests` requests were sent (whichever comes first).
    Each thread sends one untimed warm-up request (opening its connection) before the clock starts."""
    if not bodies:
        raise WoofError("no images for the load run")
    if duration is None and requests is None:
        raise WoofError("the load run needs --duration and/or --requests")
    path = f"/predictions/{model}"
    counter = itertools.count()
    barrier = threading.Barrier(concurrency + 1)
    lock = threading.Lock()
    result = LoadResult()
    deadline: list[float] = []

    def worker(k: int) -> None:
        client = Client(url, keys=keys)
        latencies, errors, sent, first_error = [], 0, 0, ""
        try:
            try:
                client.post(path, bodies[k % len(bodies)])
            except (OSError, http.client.HTTPException):
                pass  # counted if it keeps failing under load
            barrier.wait()
            while True:
                i = next(counter)
                if (requests is not None and i >= requests) or (deadline and time.perf_counter() >= deadline[0]):
                    break
                sent += 1
                start = time.perf_counter()
                try:
                    status, data = client.post(path, bodies[i % len(bodies)])
                    ok = status == 200 and b'"top_k"' in data
                    if not ok and not first_error:
                        first_error = f"HTTP {status}: {data[:120].decode(errors='replace')}"
                except (OSError, http.client.HTTPException) as e:
                    ok = False
                    first_error = first_error or f"{type(e).__name__}: {e}"
                if ok:
                    latencies.append((time.perf_counter() - start) * 1000)
                else:
                    errors += 1
        finally:
            client.close()
            with lock:
                result.requests += sent
                result.errors += errors
                result.latencies_ms += latencies
                result.first_error = result.first_error or first_error

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()  # all connections are open and warm
    start = time.perf_counter()
    if duration is not None:
        deadline.append(start + duration)
    for t in threads:
        t.join()
    result.seconds = time.perf_counter() - start
    return result


# ---------------------------------------------------------------- in-process
def inprocess_rate(archive: Archive, batch: np.ndarray, threads: int, min_seconds: float, min_runs: int) -> float:
    """Images/s of the archive's own model file on `batch`, in this process, with `threads` threads."""
    import warnings

    fmt = archive.fmt
    member = SERIALIZED.get(fmt)
    if member is None:
        raise WoofError(f"{archive.path}: unknown archive format {fmt!r}")
    with tempfile.TemporaryDirectory(prefix="woof-bench-model-") as tmp:
        with zipfile.ZipFile(archive.path) as z:
            z.extract(member, tmp)
        model_file = Path(tmp) / member
        if fmt == "torchscript":
            import torch

            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    module = torch.jit.load(str(model_file), map_location="cpu").eval()
                tensor = torch.from_numpy(batch)

                def run() -> None:
                    with torch.inference_mode():
                        module(tensor)

                return _time_runs(run, len(batch), min_seconds, min_runs)
            finally:
                torch.set_num_threads(before)

        session = ort_session(model_file, threads)
        return _time_runs(lambda: session.run(None, {"image": batch}), len(batch), min_seconds, min_runs)


def _time_runs(run, images: int, min_seconds: float, min_runs: int) -> float:
    for _ in range(2):  # warm-up (TorchScript optimises on its first runs)
        run()
    runs, start = 0, time.perf_counter()
    while runs < min_runs or time.perf_counter() - start < min_seconds:
        run()
        runs += 1
    return images * runs / (time.perf_counter() - start)


# ---------------------------------------------------------------- phone-size photos
def phone_jpegs(paths: list[Path], size: tuple[int, int] = PHONE_SIZE, quality: int = PHONE_QUALITY) -> list[bytes]:
    """Val photos cropped to 4:3 (landscape or portrait, as the photo is) and upscaled to ~12 MP JPEGs."""
    from PIL import Image

    out = []
    for path in paths:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            target = size if w >= h else size[::-1]
            ratio = target[0] / target[1]
            if w / h > ratio:  # too wide: crop the sides
                cw = round(h * ratio)
                img = img.crop(((w - cw) // 2, 0, (w - cw) // 2 + cw, h))
            else:
                ch = round(w / ratio)
                img = img.crop((0, (h - ch) // 2, w, (h - ch) // 2 + ch))
            big = img.resize(target, Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        big.save(buf, "JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


# ---------------------------------------------------------------- results
def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (higher is better on each), by x."""
    front = [i for i, (x, y) in enumerate(points)
             if not any(x2 >= x and y2 >= y and (x2 > x or y2 > y) for x2, y2 in points)]
    return sorted(front, key=lambda i: points[i])


CSV_FIELDS = ["archive", "workload", "format", "parameters_m", "size_mb",
              "val_correct", "val_total", "val_top1", "val_ci_low", "val_ci_high",
              "subset_correct", "subset_total", "subset_top1", "subset_ci_low", "subset_ci_high", "val_errors",
              "concurrency", "load_requests", "load_seconds", "requests_per_s", "p50_ms", "p95_ms", "p99_ms",
              "load_errors", "pareto"]


def result_row(archive: Archive, workload: str, accuracy: dict | None, load: LoadResult, concurrency: int,
               inprocess: dict[int, float]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "archive": archive.name, "workload": workload, "format": archive.fmt,
        "parameters_m": round(archive.parameters / 1e6, 3) if archive.parameters else "",
        "size_mb": round(archive.size_mb, 2), "concurrency": concurrency,
        "load_requests": load.requests, "load_seconds": round(load.seconds, 2),
        "requests_per_s": round(load.rps, 2), "load_errors": load.errors,
    }
    for q in (50, 95, 99):
        value = load.percentile(q)
        row[f"p{q}_ms"] = round(value, 1) if value is not None else ""
    if accuracy:
        for key, prefix in (("val", "val"), ("subset", "subset")):
            entry = accuracy[key]
            row.update({f"{prefix}_correct": entry["correct"], f"{prefix}_total": entry["total"],
                        f"{prefix}_top1": entry["top1"] if entry["top1"] is not None else "",
                        f"{prefix}_ci_low": entry["ci95"][0], f"{prefix}_ci_high": entry["ci95"][1]})
        row["val_errors"] = accuracy["errors"]
    for threads, rate in inprocess.items():
        row[f"inprocess_images_per_s_{threads}t"] = round(rate, 1)
    return row


DEFAULT_TOLERANCE = 0.005  # the default archive: the fastest within 0.5 pt of the best Lite0 top-1


def default_pick(rows: list[dict], archives: list[Archive]) -> str | None:
    """The archive to serve by default: the fastest whose full-val top-1 is within 0.5 pt of the best
    Lite0 archive's (Lite0 is the family small enough for any CPU); None without Lite0 rows."""
    arch = {a.name: a.card.get("architecture") for a in archives}
    lite0 = [r for r in rows if r["workload"] == "val" and arch.get(r["archive"]) == "efficientnet_lite0"
             and r.get("val_top1") not in ("", None)]
    if not lite0:
        return None
    best = max(r["val_top1"] for r in lite0)
    close = [r for r in lite0 if r["val_top1"] >= best - DEFAULT_TOLERANCE]
    return max(close, key=lambda r: r["requests_per_s"])["archive"]


def _acc_cell(correct, total, top1, low, high) -> str:
    if total in ("", None) or not total:
        return "–"
    return f"{top1:.2%} ({correct}/{total}; {low:.1%}–{high:.1%})"


def write_csv(path: Path, rows: list[dict]) -> None:
    fields = CSV_FIELDS + sorted({k for r in rows for k in r if k not in CSV_FIELDS})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def write_predictions(path: Path, root: Path, predictions: dict[str, tuple[list, list[dict]]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["archive", "image", "imagenet_val", "label", "predicted", "correct", "error"])
    for name, (samples, rows) in predictions.items():
        for s, r in zip(samples, rows):
            try:
                image = s.path.relative_to(root).as_posix()
            except ValueError:
                image = str(s.path)
            writer.writerow([name, image, int(s.from_imagenet_val), s.wnid, r["predicted"],
                             int(r["predicted"] == s.wnid), r["error"]])
    atomic_write_text(path, buf.getvalue())


def markdown(rows: list[dict], meta: dict[str, Any]) -> str:
    threads = sorted({int(k.rsplit("_", 1)[1][:-1]) for r in rows for k in r if k.startswith("inprocess_")})
    header = ["archive", "format", "params (M)", "size (MB)", "top-1 full val (95% CI)",
              "top-1 ImageNet-val subset (95% CI)", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors"]
    header += [f"in-process img/s, {t} thread{'s' if t > 1 else ''}" for t in threads]
    lines = ["# woof bench: the served archives side by side", "",
             f"- date: {meta['date']}",
             f"- machine: {meta['hardware']}",
             f"- command: `{meta['command']}`",
             f"- TorchServe: {meta['server']}; {meta['serving']}, WOOF_THREADS={meta['threads']} "
             "per worker; every archive registered side by side, measured one at a time while the others sit idle",
             f"- accuracy: every image of {meta['accuracy_set']} posted to TorchServe as JPEG bytes "
             "(the full set: 3929 images, 162 of them ImageNet-val-origin); 95 % Wilson intervals",
             f"- load: {meta['concurrency']} concurrent clients on loopback (keep-alive connection each), "
             f"{meta['load_limit']} per archive, rotating through {meta['load_images']} distinct val JPEGs "
             f"(mean {meta['load_kb']:.0f} KB) held in memory; latency is client side, request sent to "
             "answer read (with fewer workers than clients, a closed loop keeps the queue full: latency is "
             "then mostly waiting, about concurrency / workers x service time); "
             "errors = non-200 or transport failures",
             f"- in-process: the archive's own model file (TorchScript module or onnxruntime session), "
             f"batch {INPROC_BATCH} of preprocessed val images, images/s (decoding and preprocessing not included)",
             ""]
    if meta.get("phone"):
        lines.insert(-1, f"- phone-size row: {meta['phone']}")
    if meta.get("long_run"):
        lines.insert(-1, f"- long-run row: {meta['long_run']}")
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        label = r["archive"] if r["workload"] == "val" else f"{r['archive']} ({r['workload']})"
        label += " ★" if r.get("pareto") else ""
        label += " ◆" if r["workload"] == "val" and r["archive"] == meta.get("default") else ""
        cells = [label, r["format"], r["parameters_m"], r["size_mb"],
                 _acc_cell(r.get("val_correct"), r.get("val_total"), r.get("val_top1"),
                           r.get("val_ci_low"), r.get("val_ci_high")),
                 _acc_cell(r.get("subset_correct"), r.get("subset_total"), r.get("subset_top1"),
                           r.get("subset_ci_low"), r.get("subset_ci_high")),
                 f"{r['requests_per_s']:.1f}", r["p50_ms"], r["p95_ms"], r["p99_ms"],
                 f"{r['load_errors']}" + (f" (+{r['val_errors']} in the accuracy pass)" if r.get("val_errors") else "")]
        cells += [r.get(f"inprocess_images_per_s_{t}t", "–") for t in threads]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "★ on the Pareto front of accuracy on full val vs requests/s (no other archive is both at least "
              "as accurate and at least as fast).",
              "◆ the default archive: the fastest within 0.5 pt of the best Lite0 top-1 on full val.", "",
              f"Note: {ORIGINAL_RPS_NOTE}", "",
              "![accuracy on full val vs requests/s](bench.png)", "",
              "Files: bench.csv (these figures), bench_predictions.csv (every accuracy-pass answer), bench.png.", ""]
    if meta.get("quick"):
        lines.insert(2, "**Quick run (--quick): a tiny val subset and a few seconds of load; not a benchmark.**\n")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["workload"] == "val" and r.get("val_total")]
    points = [(float(r["requests_per_s"]), float(r["val_top1"]) * 100) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 5))
    if points:
        front = pareto_front(points)
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "-", color="tab:orange",
                zorder=1, label="Pareto front")
        for i, (r, (x, y)) in enumerate(zip(rows, points)):
            on = i in front
            ax.scatter([x], [y], s=50, zorder=2, color="tab:orange" if on else "tab:blue")
            lo, hi = float(r["val_ci_low"]) * 100, float(r["val_ci_high"]) * 100
            ax.errorbar([x], [y], yerr=[[y - lo], [hi - y]], color="grey", alpha=0.5, capsize=3, zorder=0)
            ax.annotate(r["archive"], (x, y), textcoords="offset points", xytext=(6, 4), fontsize=9)
        ax.legend(loc="lower left")
    ax.margins(x=0.15, y=0.1)
    ax.set_xlabel("requests/s through TorchServe")
    ax.set_ylabel("top-1 on val (%), 95% CI")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


# ---------------------------------------------------------------- the command
def _names(value: str | None) -> list[str] | None:
    return [n.strip() for n in value.split(",") if n.strip()] if value else None


def _threads(value: str) -> list[int]:
    try:
        threads = sorted({int(t) for t in value.split(",") if t.strip()})
    except ValueError:
        raise WoofError(f"--inprocess-threads takes numbers like 1,2, not {value!r}") from None
    if not threads or min(threads) < 1:
        raise WoofError("--inprocess-threads needs at least one positive thread count")
    return threads


def command_line(args) -> str:
    parts = ["woof bench"]
    if args.quick:
        parts.append("--quick")
    for flag, value in (("--models", args.models), ("--store", args.store), ("--data", args.data),
                        ("--url", args.url), ("--mgmt-url", args.mgmt_url), ("--concurrency", args.concurrency),
                        ("--duration", args.duration), ("--requests", args.requests),
                        ("--limit-per-class", args.limit_per_class),
                        ("--inprocess-threads", args.inprocess_threads), ("--out", args.out),
                        ("--workers", args.workers), ("--batch-size", args.batch_size),
                        ("--max-batch-delay", args.max_batch_delay if args.batch_size > 1 else None),
                        ("--long-run", args.long_run)):
        if value is not None:
            parts.append(f"{flag} {value}")
    parts += [flag for flag, on in (("--phone-size", args.phone_size), ("--quiet", args.quiet)) if on]
    return " ".join(parts)


def cmd_bench(args) -> int:
    if args.concurrency < 1:
        raise WoofError("--concurrency must be at least 1")
    if (args.duration is not None and args.duration <= 0) or (args.requests is not None and args.requests < 1):
        raise WoofError("--duration and --requests must be positive")
    if bool(args.url) != bool(args.mgmt_url):
        raise WoofError("--url and --mgmt-url go together (the management API registers the archives)")
    if args.key_file and not args.url:
        raise WoofError("--key-file goes with --url (a TorchServe woof bench starts has its own keys)")
    if args.quick and (args.phone_size or args.long_run):
        raise WoofError("--quick runs no phone-size or long load; drop one of them")
    if args.workers < 1 or args.batch_size < 1 or args.max_batch_delay < 0 or (args.long_run or 1) < 1:
        raise WoofError("--workers, --batch-size and --long-run must be >= 1, --max-batch-delay >= 0")
    duration = args.duration
    if duration is None and args.requests is None:
        duration = QUICK_DURATION if args.quick else DURATION
    per_class = args.limit_per_class or (2 if args.quick else None)
    default_threads = os.environ.get("WOOF_THREADS", "1") if args.quick else "1,2"
    inproc_threads = _threads(args.inprocess_threads or default_threads)
    progress = not args.quiet
    out = Path(args.out) if args.out else DEFAULT_OUT
    store = Path(args.store) if args.store else MODEL_STORE

    archives = find_archives(store, _names(args.models))
    root = resolve_root(args.data)
    samples = list_samples(root, "val")
    if args.quick and not args.limit_per_class:
        samples = quick_samples(samples)
    elif per_class:
        samples = subset_per_class(samples, per_class)  # the images `woof eval --limit-per-class N` uses
    load_paths = pick_images(root, "val", 20 if args.quick else LOAD_IMAGES)
    bodies = [p.read_bytes() for p in load_paths]
    batch_paths = (load_paths * (INPROC_BATCH // len(load_paths) + 1))[:INPROC_BATCH]
    load_limit = " and/or ".join(x for x in ((f"{duration:g} s" if duration else ""),
                                             (f"{args.requests} requests" if args.requests else "")) if x)
    print(f"benchmarking {', '.join(a.name for a in archives)}: accuracy on {len(samples)} val images, "
          f"load {load_limit} at concurrency {args.concurrency}")

    rows, predictions = [], {}
    with Server(store, args.url, args.mgmt_url, timeout=args.timeout, workers=args.workers,
                batch_size=args.batch_size, max_batch_delay=args.max_batch_delay, key_file=args.key_file) as server:
        for archive in archives:
            server.register(archive)
        for archive in archives:
            preds = accuracy_pass(server.url, archive, samples, args.concurrency, progress, server.keys)
            accuracy = accuracy_figures(samples, preds)
            predictions[archive.name] = (samples, preds)
            load = run_load(server.url, archive.name, bodies, args.concurrency, duration, args.requests, server.keys)
            spec = archive.card["preprocessing"]
            batch = image_batch(batch_paths, spec)
            inprocess = {t: inprocess_rate(archive, batch, t, 0.0 if args.quick else INPROC_SECONDS,
                                           1 if args.quick else 3) for t in inproc_threads}
            rows.append(result_row(archive, "val", accuracy, load, args.concurrency, inprocess))
            p = {q: load.percentile(q) for q in (50, 95, 99)}
            print(f"{archive.name} ({archive.fmt}): full val {fmt_acc(accuracy['val'])}; "
                  f"ImageNet-val subset {fmt_acc(accuracy['subset'])}; "
                  f"{load.rps:.1f} req/s, p50/p95/p99 "
                  + "/".join(f"{v:.0f}" if v is not None else "-" for v in p.values())
                  + f" ms, {load.errors} errors of {load.requests}; in-process "
                  + ", ".join(f"{r:.1f} img/s at {t} thr" for t, r in inprocess.items()))
            if accuracy["errors"]:
                print(f"  warning: {accuracy['errors']} accuracy-pass requests failed (counted as wrong); "
                      "see bench_predictions.csv", file=sys.stderr)
            if load.errors:
                print(f"  warning: {load.errors} load errors, first: {load.first_error}", file=sys.stderr)
        phone_note = long_note = None
        default = default_pick(rows, archives)
        # the extra runs load what users get: the default archive (else the most accurate one)
        chosen = default or max(rows, key=lambda r: (r["val_top1"], r["requests_per_s"]))["archive"]
        archive = next(a for a in archives if a.name == chosen)
        why = "the default" if default else "the most accurate"
        if args.long_run:
            load = run_load(server.url, archive.name, bodies, args.concurrency, None, args.long_run, server.keys)
            rows.append(result_row(archive, f"{load.requests} requests", None, load, args.concurrency, {}))
            long_note = (f"{archive.name} ({why}) for {load.requests} requests at concurrency {args.concurrency}, "
                         f"{load.errors} errors")
            print(f"{archive.name} long run: {load.rps:.1f} req/s, p99 {load.percentile(99) or 0:.0f} ms, "
                  f"{load.errors} errors of {load.requests}")
        if args.phone_size:
            phone = phone_jpegs(load_paths[:PHONE_IMAGES])
            load = run_load(server.url, archive.name, phone, args.concurrency, duration, args.requests, server.keys)
            rows.append(result_row(archive, "phone 12 MP", None, load, args.concurrency, {}))
            phone_note = (f"{archive.name} ({why}) under the same load with {len(phone)} val photos "
                          f"upscaled to {PHONE_SIZE[0]}x{PHONE_SIZE[1]} and encoded at JPEG quality {PHONE_QUALITY} "
                          f"(mean {np.mean([len(b) for b in phone]) / 1e6:.1f} MB; real phone photos carry more "
                          "detail and are larger files, so decoding may cost more than here)")
            print(f"{archive.name} phone-size: {load.rps:.1f} req/s, p50 {load.percentile(50) or 0:.0f} ms, "
                  f"{load.errors} errors of {load.requests}")
        started = server.started_here
        server_desc = ("started by woof bench on free loopback ports with a private temp folder" if started
                       else f"the running server at {server.url} (its own worker settings apply)")

    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "hardware": hardware(), "command": command_line(args), "server": server_desc,
        "threads": server.threads if started else "as set for that server",
        "accuracy_set": f"val ({per_class} per class: {len(samples)} images)" if per_class else "full val",
        "concurrency": args.concurrency, "load_limit": load_limit, "load_images": len(bodies),
        "load_kb": np.mean([len(b) for b in bodies]) / 1e3, "phone": phone_note, "quick": args.quick,
        "long_run": long_note, "default": default,
        "serving": (f"{args.workers} worker(s) per archive, batch size {args.batch_size}"
                    + (f", max batch delay {args.max_batch_delay} ms" if args.batch_size > 1 else "")),
    }
    out.mkdir(parents=True, exist_ok=True)
    val_rows = [r for r in rows if r["workload"] == "val"]
    front = pareto_front([(r["requests_per_s"], r["val_top1"]) for r in val_rows])
    for i, r in enumerate(val_rows):
        r["pareto"] = int(i in front)
    write_csv(out / "bench.csv", rows)
    write_predictions(out / "bench_predictions.csv", root, predictions)
    atomic_write_text(out / "bench.md", markdown(rows, meta))
    plot(rows, out / "bench.png", f"woof archives through TorchServe, concurrency {args.concurrency}"
         + (" (quick run)" if args.quick else ""))
    print(f"wrote {out / 'bench.md'}, bench.csv, bench_predictions.csv and bench.png")
    return 0


def add_bench(sub) -> None:
    p = sub.add_parser(
        "bench", help="benchmark the archives through TorchServe: accuracy, requests/s, latency",
        description="Host the chosen archives side by side in TorchServe (1 worker each; WOOF_THREADS threads "
                    "per worker) and measure each in turn: top-1 on val and on the 162 ImageNet-val-origin "
                    "images through TorchServe, requests/s and p50/p95/p99 latency under a concurrent load on "
                    "loopback, and the bare model's images/s in-process. Writes bench.md, bench.csv, "
                    "bench_predictions.csv and bench.png to --out.")
    p.add_argument("--models", metavar="A,B", help="archive names in the store (default: every fixed-name "
                                                   f"archive present: {', '.join(ARCHIVES)})")
    p.add_argument("--store", metavar="DIR", help="folder with the .mar files (default: model_store/)")
    p.add_argument("--data", metavar="PATH", help="Imagewoof root (default: $WOOF_DATA_ROOT)")
    p.add_argument("--url", metavar="URL", help="use the TorchServe inference API at URL instead of starting one")
    p.add_argument("--mgmt-url", metavar="URL", help="its management API (with --url)")
    p.add_argument("--key-file", metavar="FILE",
                   help="its key_file.json (with --url; default: $WOOF_TORCHSERVE_KEY_FILE, else key_file.json "
                        "where woof serve runs TorchServe)")
    p.add_argument("--concurrency", type=int, default=CONCURRENCY, help="concurrent clients (default %(default)s)")
    p.add_argument("--duration", type=float, metavar="S",
                   help=f"seconds of load per archive (default {DURATION:g}, or {QUICK_DURATION:g} with --quick, "
                        "unless --requests is given)")
    p.add_argument("--requests", type=int, metavar="N", help="requests per archive in the load run")
    p.add_argument("--limit-per-class", type=int, metavar="N", help="accuracy on N val images per class only")
    p.add_argument("--inprocess-threads", metavar="T,T", help="thread counts for the in-process figure "
                                                              "(default 1,2; with --quick: $WOOF_THREADS or 1)")
    p.add_argument("--phone-size", action="store_true",
                   help="also load the default archive (see --long-run) with ~12 MP JPEGs")
    p.add_argument("--long-run", type=int, metavar="N",
                   help="also send N requests to the default archive: the fastest within 0.5 pt of the best Lite0")
    p.add_argument("--workers", type=int, default=1, help="TorchServe workers per archive (default 1)")
    p.add_argument("--batch-size", type=int, default=1, help="TorchServe batch size per archive (default 1)")
    p.add_argument("--max-batch-delay", type=int, default=0, metavar="MS",
                   help="ms TorchServe waits to fill a batch (with --batch-size > 1)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: 2 val images per class (one of ImageNet-val origin), {QUICK_DURATION:g} s "
                        "of load per archive, no phone-size run")
    p.add_argument("--out", metavar="DIR", help="report folder (default: reports/)")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for TorchServe to start")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_bench)
