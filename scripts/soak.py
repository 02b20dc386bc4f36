#!/usr/bin/env python
"""Soak run: the full stack (`woof serve`) under mixed load for N minutes, with one TorchServe kill and one
gateway-worker kill on the way.

Load: /predict as the web page and the bot send it (multipart field `file`, a sticky X-Client-Id per
simulated user), at a fixed concurrency, on real val photos; every 30 s an admin call switches the default
model or the A/B split (and back). At 1/3 of the run TorchServe's Java server is killed (-9), at 2/3 one
gunicorn worker. Reported: requests and errors (inside and outside the recovery windows), the time from each
kill to the next successful prediction, the RSS of every process at warm-up and at the end, the size of logs/
at start and end, and the log bytes per request.

    .venv/bin/python scripts/soak.py [--minutes 20] [--concurrency 4] [--data data/imagewoof2-320]
Writes reports/soak.md. Needs the archives in model_store/ (at least the default lite0-int8).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import requests  # noqa: E402

from scripts.bench import free_ports  # noqa: E402
from scripts.serve import render_config  # noqa: E402
from training.checkpoint import hardware  # noqa: E402
from training.data import list_samples, subset_per_class  # noqa: E402
from woof.files import atomic_write_text  # noqa: E402


def tree_rss(pid: int) -> dict[str, float]:
    """RSS in MB of a process and its descendants, by command name."""
    out: dict[str, float] = {}
    try:
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            name = "java (TorchServe)" if "java" in p.name() else " ".join(p.cmdline()[:3])[-60:]
            out[name] = out.get(name, 0.0) + p.memory_info().rss / 1e6
    except psutil.Error:
        pass
    return out


def log_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and "prometheus" not in f.parts)


def log_bound() -> tuple[float, str]:
    """The most the rolling logs can hold (MB, before compression of rolled copies), from the committed
    configuration: TorchServe's handlers/log4j2.xml and the gateway's access-log rotation."""
    import xml.etree.ElementTree as ET

    from gateway.config import ACCESS_LOG_BACKUPS, ACCESS_LOG_MAX_BYTES

    files = []
    for rolling in ET.parse(ROOT / "handlers" / "log4j2.xml").getroot().iter("RollingFile"):
        size = float(rolling.find("./Policies/SizeBasedTriggeringPolicy").get("size").removesuffix(" MB"))
        copies = int(rolling.find("DefaultRolloverStrategy").get("max"))
        files.append((f"{rolling.get('name')} {size:g} MB x {1 + copies}", size * (1 + copies)))
    size = ACCESS_LOG_MAX_BYTES / 2**20
    files.append((f"gateway_access {size:g} MB x {1 + ACCESS_LOG_BACKUPS}", size * (1 + ACCESS_LOG_BACKUPS)))
    return sum(mb for _, mb in files), ", ".join(what for what, _ in files)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=20)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--data", default=str(ROOT / "data" / "imagewoof2-320"))
    args = p.parse_args(argv)
    photos = [s.path.read_bytes() for s in subset_per_class(list_samples(Path(args.data), "val"), 10)]
    base = Path(tempfile.mkdtemp(prefix="woof-soak-"))
    ports = free_ports(6)
    config = render_config(ROOT / "config.properties", base / "config.properties", {
        "inference_address": f"http://127.0.0.1:{ports[0]}", "management_address": f"http://127.0.0.1:{ports[1]}",
        "metrics_address": f"http://127.0.0.1:{ports[2]}", "grpc_inference_port": str(ports[3]),
        "grpc_management_port": str(ports[4]), "model_store": str(ROOT / "model_store")})
    token = secrets.token_urlsafe(16)
    logs = base / "logs"
    env = {**os.environ, "TMPDIR": str(base), "LOG_LOCATION": str(logs), "METRICS_LOCATION": str(logs),
           "WOOF_STATE_DIR": str(base / "state"), "WOOF_ADMIN_TOKEN": token}
    # woof serve's own values: TorchServe runs in `base` (the config's folder) and writes its keys there
    for key in ("WOOF_TORCHSERVE_URL", "WOOF_TORCHSERVE_MGMT_URL", "WOOF_DEFAULT_MODEL", "WOOF_MODEL_STORE",
                "WOOF_TORCHSERVE_DIR", "WOOF_TORCHSERVE_KEY_FILE"):
        env.pop(key, None)
    gateway = f"http://127.0.0.1:{ports[5]}"
    serve = subprocess.Popen([str(Path(sys.executable).with_name("woof")), "serve", "--config", str(config),
                              "--bind", f"127.0.0.1:{ports[5]}"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(serve.stdout), daemon=True).start()
    admin = {"Authorization": f"Bearer {token}"}
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{gateway}/readyz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if serve.poll() is not None:
                raise SystemExit("woof serve stopped:\n" + "".join(output))
            time.sleep(1)
        models = [m["name"] for m in requests.get(f"{gateway}/models", timeout=10).json()["models"]]
        events: list[tuple[float, str]] = []
        results: list[tuple[float, float, int]] = []  # (sent, answered, status or 0 for a connection error)
        details: dict[int, str] = {}  # index in results -> what a non-200 answer said (status, error, body)
        stop = threading.Event()
        lock = threading.Lock()

        def user(i: int) -> None:
            client = f"soak-user-{i}"
            n = 0
            while not stop.is_set():
                n += 1
                sent = time.monotonic()
                detail = ""
                try:
                    r = requests.post(f"{gateway}/predict", headers={"X-Client-Id": client}, timeout=60,
                                      files={"file": ("photo.jpg", photos[(i * 7919 + n) % len(photos)],
                                                      "image/jpeg")})
                    code = r.status_code
                    if code != 200:
                        detail = f"{code} {r.text.strip()[:160]}"
                except requests.RequestException as e:
                    code, detail = 0, f"connection: {type(e).__name__}: {str(e)[:120]}"
                with lock:
                    results.append((sent, time.monotonic(), code))
                    if detail:
                        details[len(results) - 1] = detail
                if code == 503:
                    time.sleep(1)

        start = time.monotonic()
        duration = args.minutes * 60
        pool = ThreadPoolExecutor(args.concurrency)
        for i in range(args.concurrency):
            pool.submit(user, i)
        time.sleep(min(60, duration / 6))  # warm-up
        warm = {"woof serve": tree_rss(serve.pid)}
        gunicorn = next((c for c in psutil.Process(serve.pid).children() if "gunicorn" in " ".join(c.cmdline())), None)
        java = int((base / ".model_server.pid").read_text().split()[0])
        warm["gateway (gunicorn)"] = tree_rss(gunicorn.pid) if gunicorn else {}
        warm["TorchServe"] = tree_rss(java)
        logs_start, requests_start = log_bytes(logs), len(results)
        killed_ts = killed_gw = False
        next_admin = time.monotonic() + 30
        flip = 0
        while time.monotonic() - start < duration:
            now = time.monotonic() - start
            if not killed_ts and now > duration / 3:
                java = int((base / ".model_server.pid").read_text().split()[0])
                os.kill(java, signal.SIGKILL)
                events.append((time.monotonic(), "TorchServe killed"))
                killed_ts = True
            if not killed_gw and now > 2 * duration / 3 and gunicorn:
                workers = gunicorn.children()
                if workers:
                    workers[0].kill()
                    events.append((time.monotonic(), "a gateway worker killed"))
                killed_gw = True
            if time.monotonic() > next_admin and len(models) >= 1:
                flip += 1
                calls = []
                if len(models) >= 2 and flip % 2:
                    calls.append(("split on", "post", "split", {"a": models[0], "b": models[1], "b_percent": 50}))
                elif len(models) >= 2:
                    calls.append(("split off", "delete", "split", None))
                calls.append((f"default {models[flip % len(models)]}", "post", "default",
                              {"model": models[flip % len(models)]}))
                for what, method, path, body in calls:
                    try:
                        r = requests.request(method, f"{gateway}/admin/{path}", headers=admin, timeout=30, json=body)
                        events.append((time.monotonic(), f"admin {what}: {r.status_code}"))
                    except requests.RequestException as e:
                        events.append((time.monotonic(), f"admin {what}: {type(e).__name__}"))
                next_admin = time.monotonic() + 30
            time.sleep(1)
        end = {"woof serve": tree_rss(serve.pid)}
        gunicorn = next((c for c in psutil.Process(serve.pid).children() if "gunicorn" in " ".join(c.cmdline())), None)
        end["gateway (gunicorn)"] = tree_rss(gunicorn.pid) if gunicorn else {}
        java = int((base / ".model_server.pid").read_text().split()[0])
        end["TorchServe"] = tree_rss(java)
        stop.set()
        pool.shutdown(wait=True)
        logs_end, requests_end = log_bytes(logs), len(results)
    finally:
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(serve.pid, signal.SIGKILL)
    # recovery: from each kill to the first 200 for a request sent after the last failure within 120 s of it
    # (a kill that causes no failure recovers at once); failures inside [kill, recovery] are expected
    windows, recoveries = [], []
    for t, what in events:
        if "killed" not in what:
            continue
        # a request still in flight when the process died fails with it: it counts towards this kill
        failures = [sent for sent, done, code in results if code != 200 and done >= t and sent <= t + 120]
        if not failures:
            recoveries.append((what, 0.0))
            continue
        ok = next((done for sent, done, code in results if code == 200 and sent > failures[-1]), None)
        recoveries.append((what, None if ok is None else ok - t))
        windows.append((t, ok if ok is not None else float("inf")))
    errors = [(i, sent, done, code) for i, (sent, done, code) in enumerate(results) if code != 200]
    outside = {i for i, sent, done, _ in errors if not any(done >= a and sent <= b for a, b in windows)}
    lines = ["# Soak run: woof serve under mixed load, with kills", "",
             f"`.venv/bin/python scripts/soak.py --minutes {args.minutes:g} --concurrency {args.concurrency}` on "
             f"{hardware()}; models served: {', '.join(models)}; photos: {len(photos)} val photos of "
             f"{Path(args.data).name}, sent as the web page and the bot send them (multipart, sticky client ids); "
             "admin switching of the default model and the A/B split every 30 s.", "",
             "| figure | value |", "|---|---|",
             f"| requests | {len(results)} |",
             f"| non-200 answers (503 with Retry-After while TorchServe is down, or other) | {len(errors)} |",
             f"| non-200 answers outside the recovery windows | {len(outside)} |"]
    lines += [f"| recovery after {what} | {'not recovered' if s is None else f'{s:.1f} s'} |" for what, s in recoveries]
    admin_calls = [what for _, what in events if what.startswith("admin")]
    answered_200 = sum(w.endswith(": 200") for w in admin_calls)
    lines.append(f"| admin calls (answered 200) | {len(admin_calls)} ({answered_200}) |")
    per_request = (logs_end - logs_start) / max(1, requests_end - requests_start)
    bound, parts = log_bound()
    lines += [f"| logs/ at warm-up / end | {logs_start / 1e6:.2f} MB / {logs_end / 1e6:.2f} MB |",
              f"| logs/ bound of the rolling files ({parts}; launcher.log and gateway.log get start-up lines, "
              f"warnings and errors only, no per-request lines) | {bound:.0f} MB |",
              f"| log bytes per request | {per_request:.0f} |", "", "RSS (MB) after warm-up and at the end:", "",
              "| part | process | warm-up | end | growth |", "|---|---|---|---|---|"]
    for part in warm:
        for name in sorted(set(warm[part]) | set(end.get(part, {}))):
            a, b = warm[part].get(name), end.get(part, {}).get(name)
            growth = f"{(b - a) / a:+.0%}" if a and b else "–"
            lines.append(f"| {part} | {name} | {a or 0:.0f} | {b or 0:.0f} | {growth} |")
    lines += ["", "Every non-200 answer: when it was sent (s from the start), what it said, and the kill or admin call "
              "nearest before it (a request in flight when a process was killed counts towards that kill's window):",
              "", "| sent at | answered after | inside a recovery window | answer | last event before it |",
              "|---|---|---|---|---|"]
    for i, sent, done, code in errors[:50]:
        before = [(t, what) for t, what in events if t <= done]
        last = f"{before[-1][1]} ({done - before[-1][0]:.1f} s before the answer)" if before else "–"
        inside = "no" if i in outside else "yes"
        answer = details.get(i, str(code)).replace("|", "/").replace("\n", " ")
        lines.append(f"| {sent - start:.1f} s | {done - sent:.2f} s | {inside} | {answer} | {last} |")
    if len(errors) > 50:
        lines.append(f"| … {len(errors) - 50} more | | | | |")
    lines += ["", "(The killed processes are new ones at the end: TorchServe's Java server and its workers were "
              "restarted by woof serve, the gateway worker by gunicorn.)"]
    atomic_write_text(ROOT / "reports" / "soak.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
