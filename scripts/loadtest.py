#!/usr/bin/env python
"""Load test of the woof gateway: N concurrent clients post real val JPEGs for T seconds (or R requests).

For each model: the same load straight to TorchServe (/predictions/NAME) and through the gateway
(/predict?model=NAME, gunicorn), so the gateway's overhead is a measured ratio; then, with two or more
models, an A/B split through the gateway (no ?model=, clients spread over 1000 X-Client-Id values).
Prints req/s, p50/p95/p99 latency (client side), errors, and the resident memory of the gateway
(gunicorn master + workers) and of TorchServe (frontend + model workers) before and after.

Everything runs on loopback. By default it starts its own TorchServe (free ports, private temp folder)
with the chosen archives and its own gateway, and stops both at the end; --torchserve-url/--mgmt-url
use a running TorchServe instead (archives it lacks are registered, then unregistered; its keys come from
--key-file, default $WOOF_TORCHSERVE_KEY_FILE or where `woof serve` runs TorchServe). The direct case sends
TorchServe's inference key (token authorisation), as the gateway does.

    .venv/bin/python scripts/loadtest.py --models lite0-int8 --duration 20
    .venv/bin/python scripts/loadtest.py --models lite0-int8,lite0-onnx --ab 10 --duration 60 --requests 5000

Run it on an otherwise idle machine: the clients, the gateway and TorchServe share its CPUs.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import secrets
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.bench import Client, LoadResult, Server, find_archives, free_ports  # noqa: E402
from scripts.serve import CONFIG, read_properties, start_gateway, stop_gateway  # noqa: E402
from woof.errors import WoofError  # noqa: E402
from woof.torchserve_keys import KEY_FILE_ENV, TorchServeKeys  # noqa: E402


def run_load(base_url: str, path: str, bodies: list[bytes], concurrency: int, duration: float,
             requests: int, client_ids: int = 0, keys: TorchServeKeys | None = None) -> tuple[LoadResult, Counter]:
    """`concurrency` threads post `bodies` in rotation until `duration` s passed or `requests` were sent.
    With client_ids > 0 each request carries one of that many X-Client-Id values (for the A/B split).
    `keys`: TorchServe's, when base_url is its inference API. Returns the result and how many answers each
    model gave."""
    counter, lock, result, models = itertools.count(), threading.Lock(), LoadResult(), Counter()
    barrier = threading.Barrier(concurrency + 1)
    deadline: list[float] = []

    def worker(k: int) -> None:
        client, latencies, errors, sent, seen, first_error = (Client(base_url, timeout=60.0, keys=keys), [], 0, 0,
                                                              Counter(), "")
        try:
            try:
                # opens the connection
                client.post(path, bodies[k % len(bodies)], headers={"X-Client-Id": f"warm-up-{k}"})
            except (OSError, http.client.HTTPException):
                pass
            barrier.wait()
            while True:
                i = next(counter)
                if i >= requests or (deadline and time.perf_counter() >= deadline[0]):
                    break
                sent += 1
                headers = {"X-Client-Id": f"client-{i % client_ids}"} if client_ids else {}
                start = time.perf_counter()
                try:
                    status, data = client.post(path, bodies[i % len(bodies)], headers=headers)
                    ok = status == 200 and b'"top_k"' in data
                    if ok:
                        seen[json.loads(data).get("model", "?")] += 1
                    elif not first_error:
                        first_error = f"HTTP {status}: {data[:160].decode(errors='replace')}"
                except (OSError, http.client.HTTPException) as e:
                    ok, first_error = False, first_error or f"{type(e).__name__}: {e}"
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
                models.update(seen)

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    deadline.append(start + duration)
    for t in threads:
        t.join()
    result.seconds = time.perf_counter() - start
    return result, models


# ---------------------------------------------------------------- memory
def rss_mb(pid: int | None) -> float | None:
    """Resident memory of a process and all its descendants, in MB."""
    import psutil

    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 1e6


def listening_pid(port: int) -> int | None:
    """The process listening on a loopback TCP port (TorchServe's Java frontend)."""
    import psutil

    try:
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
                return c.pid
    except (psutil.Error, OSError):
        return None
    return None


# ---------------------------------------------------------------- run
def val_jpegs(data: Path, count: int) -> list[bytes]:
    wnids = sorted(p for p in (data / "val").iterdir() if p.is_dir())
    if len(wnids) != 10:
        raise WoofError(f"{data}/val does not hold the 10 Imagewoof classes")
    per_class = [sorted(w.glob("*.JPEG")) for w in wnids]
    files = [f for group in itertools.zip_longest(*per_class) for f in group if f][:count]  # classes interleaved
    return [f.read_bytes() for f in files]


def admin(gateway: str, token: str, path: str, payload: dict | None, method: str = "POST") -> dict:
    request = urllib.request.Request(f"{gateway}/admin/{path}", method=method,
                                     data=json.dumps(payload).encode() if payload is not None else None,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as r:
        return json.loads(r.read())


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def row(case: str, target: str, result: LoadResult, mem: dict, extra: str = "") -> dict:
    return {"case": case, "target": target, "requests": result.requests, "errors": result.errors,
            "seconds": round(result.seconds, 2), "rps": round(result.rps, 1),
            "p50_ms": result.percentile(50), "p95_ms": result.percentile(95), "p99_ms": result.percentile(99),
            "first_error": result.first_error, "memory_mb": mem, "note": extra}


def print_row(r: dict) -> None:
    mem = r["memory_mb"]
    print(f"{r['case']:<28} {r['target']:<11} {r['rps']:>7.1f} {fmt(r['p50_ms']):>7} {fmt(r['p95_ms']):>7} "
          f"{fmt(r['p99_ms']):>7} {r['errors']:>6} {r['requests']:>8}  "
          f"gw {fmt(mem.get('gateway_before'), 0)}->{fmt(mem.get('gateway_after'), 0)} MB  "
          f"ts {fmt(mem.get('torchserve_before'), 0)}->{fmt(mem.get('torchserve_after'), 0)} MB  {r['note']}",
          flush=True)
    if r["first_error"]:
        print(f"    first error: {r['first_error']}", flush=True)


def targets(direct: dict, gateway: dict, growth: dict) -> str:
    """The gateway issue's figures for the first model (they assume the fastest archive, concurrency 8)."""
    checks = [
        (">= 80 req/s", gateway["rps"] >= 80, f"{gateway['rps']:.1f}"),
        ("p99 < 200 ms", (gateway["p99_ms"] or 1e9) < 200, fmt(gateway["p99_ms"])),
        ("0 errors over >= 5000 requests", gateway["errors"] == 0 and gateway["requests"] >= 5000,
         f"{gateway['errors']} / {gateway['requests']}"),
        ("memory growth < 10 %", all(g is not None and g < 10 for g in growth.values()),
         ", ".join(f"{k} {fmt(v)} %" for k, v in growth.items())),
        ("overhead <= 20 % of direct req/s", direct["rps"] > 0 and gateway["rps"] >= 0.8 * direct["rps"],
         f"{100 * (1 - gateway['rps'] / direct['rps']):.1f} %" if direct["rps"] else "-"),
    ]
    return f"targets ({gateway['case']} through the gateway): " + "; ".join(
        f"{name}: {'met' if ok else 'NOT met'} ({value})" for name, ok, value in checks)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="lite0-int8",
                   help="archives of the store, comma-separated (default: %(default)s)")
    p.add_argument("--store", default=str(REPO / "model_store"), help="model store (default: %(default)s)")
    p.add_argument("--data", default=os.environ.get("WOOF_DATA_ROOT") or str(REPO.parent / "shared" / "data" /
                                                                              "imagewoof2-160"),
                   help="Imagewoof root with val/ (default: $WOOF_DATA_ROOT or ../shared/data/imagewoof2-160)")
    p.add_argument("--images", type=int, default=200, help="distinct val JPEGs the clients rotate through")
    p.add_argument("--concurrency", type=int, default=8, help="client threads (default: %(default)s)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per case at most (default: %(default)s)")
    p.add_argument("--requests", type=int, default=10000, help="requests per case at most (default: %(default)s)")
    p.add_argument("--warmup", type=float, default=5.0,
                   help="seconds (at most; 20 requests per client) of untimed warm-up per model and target")
    p.add_argument("--ab", type=float, default=10.0, metavar="PERCENT",
                   help="with 2+ models: share of clients sent to the second one in the A/B case (default 10)")
    p.add_argument("--ts-workers", type=int, default=int(read_properties(CONFIG).get("default_workers_per_model", 1)),
                   help="TorchServe workers per model when the script starts TorchServe (default: config.properties)")
    p.add_argument("--workers", type=int, default=int(os.environ.get("WOOF_GATEWAY_WORKERS") or 2),
                   help="gunicorn workers of the gateway (default: %(default)s)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("WOOF_GATEWAY_THREADS") or 8),
                   help="threads per gunicorn worker (default: %(default)s)")
    p.add_argument("--torchserve-url", help="use this running TorchServe (loopback) instead of starting one")
    p.add_argument("--mgmt-url", help="its management API (with --torchserve-url)")
    p.add_argument("--key-file", help="its key_file.json (with --torchserve-url; default: $WOOF_TORCHSERVE_KEY_FILE, "
                                      "else where woof serve runs TorchServe)")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = p.parse_args(argv)
    try:
        return run(args)
    except WoofError as e:
        print(f"loadtest: error: {e}", file=sys.stderr)
        return 2


def run(args) -> int:
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    for url in (args.torchserve_url, args.mgmt_url):
        if url and urllib.parse.urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
            raise WoofError(f"{url} is not a loopback address: this load test stays on loopback")
    archives = find_archives(Path(args.store), names)
    bodies = val_jpegs(Path(args.data), args.images)
    print(f"{len(bodies)} val JPEGs, {args.concurrency} clients, at most {args.duration:g} s and {args.requests} "
          f"requests per case; gateway {args.workers} workers x {args.threads} threads; TorchServe "
          f"{args.ts_workers} workers per model; {os.cpu_count()} CPUs",
          flush=True)
    rows = []
    with Server(Path(args.store), args.torchserve_url, args.mgmt_url, log=lambda m: print(m, flush=True),
                workers=args.ts_workers, key_file=args.key_file) as ts:
        for archive in archives:
            ts.register(archive)
        ts_pid = listening_pid(urllib.parse.urlsplit(ts.url).port)
        base = Path(tempfile.mkdtemp(prefix="woof-loadtest-"))
        (port,) = free_ports(1)
        token = secrets.token_hex(16)
        (base / "prometheus").mkdir()
        env = {"WOOF_TORCHSERVE_URL": ts.url, "WOOF_TORCHSERVE_MGMT_URL": ts.mgmt, "WOOF_DEFAULT_MODEL": names[0],
               "WOOF_ADMIN_TOKEN": token, "WOOF_MODEL_STORE": str(Path(args.store).resolve()),
               "WOOF_STATE_DIR": str(base / "state"), "PROMETHEUS_MULTIPROC_DIR": str(base / "prometheus"),
               KEY_FILE_ENV: str(ts.keys.path or "")}
        gateway_process = start_gateway(env, f"127.0.0.1:{port}", args.workers, args.threads, log_dir=base,
                                        access_log=False, log=lambda m: print(m, flush=True), tied=True)
        gateway = f"http://127.0.0.1:{port}"
        try:
            def memory() -> dict:
                return {"gateway": rss_mb(gateway_process.pid), "torchserve": rss_mb(ts_pid)}

            cold = memory()
            # Warm-up, untimed: workers import lazily and grow their pools on first use, which is not growth
            # under load; the memory baseline is taken after it.
            for name in names:
                run_load(ts.url, f"/predictions/{name}", bodies, args.concurrency, args.warmup, 20 * args.concurrency,
                         keys=ts.keys)
                run_load(gateway, f"/predict?model={name}", bodies, args.concurrency, args.warmup,
                         20 * args.concurrency, client_ids=1000)
            start_mem = memory()
            print(f"memory cold: gateway {fmt(cold['gateway'], 0)} MB, TorchServe {fmt(cold['torchserve'], 0)} MB; "
                  f"after the warm-up: {fmt(start_mem['gateway'], 0)} MB, {fmt(start_mem['torchserve'], 0)} MB",
                  flush=True)
            print(f"\n{'case':<28} {'target':<11} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
                  f"{'errors':>6} {'requests':>8}  memory (RSS, before -> after)", flush=True)
            for name in names:
                for target, url, path in (("torchserve", ts.url, f"/predictions/{name}"),
                                          ("gateway", gateway, f"/predict?model={name}")):
                    before = memory()
                    result, _ = run_load(url, path, bodies, args.concurrency, args.duration, args.requests,
                                         client_ids=1000 if target == "gateway" else 0,
                                         keys=ts.keys if target == "torchserve" else None)
                    after = memory()
                    rows.append(row(name, target, result, {
                        "gateway_before": before["gateway"], "gateway_after": after["gateway"],
                        "torchserve_before": before["torchserve"], "torchserve_after": after["torchserve"]}))
                    print_row(rows[-1])
                direct, through = rows[-2]["rps"], rows[-1]["rps"]
                if direct:
                    print(f"{'':<28} gateway/direct req/s = {through / direct:.3f} "
                          f"(overhead {100 * (1 - through / direct):.1f} %)", flush=True)
            if len(names) >= 2:
                a, b = names[0], names[1]
                admin(gateway, token, "split", {"a": a, "b": b, "b_percent": args.ab})
                before = memory()
                result, models = run_load(gateway, "/predict", bodies, args.concurrency, args.duration, args.requests,
                                          client_ids=1000)
                after = memory()
                admin(gateway, token, "split", None, method="DELETE")
                answered = sum(models.values()) or 1
                note = f"split {100 - args.ab:g}/{args.ab:g}: " + ", ".join(
                    f"{m} {100 * n / answered:.1f} %" for m, n in models.most_common())
                rows.append(row(f"A/B {a} | {b}", "gateway", result, {
                    "gateway_before": before["gateway"], "gateway_after": after["gateway"],
                    "torchserve_before": before["torchserve"], "torchserve_after": after["torchserve"]}, note))
                print_row(rows[-1])
            end_mem = memory()
            growth = {k: (100 * (end_mem[k] / start_mem[k] - 1) if start_mem[k] and end_mem[k] else None)
                      for k in start_mem}
            print(f"\nmemory from after the warm-up to the end: gateway {fmt(start_mem['gateway'], 0)} -> "
                  f"{fmt(end_mem['gateway'], 0)} MB ({fmt(growth['gateway'])} %), TorchServe "
                  f"{fmt(start_mem['torchserve'], 0)} -> {fmt(end_mem['torchserve'], 0)} MB "
                  f"({fmt(growth['torchserve'])} %)", flush=True)
            print(targets(rows[0], rows[1], growth), flush=True)
        finally:
            stop_gateway(gateway_process)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "args": vars(args)}, indent=1))
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
