#!/usr/bin/env python
"""Side by side, in one run on one machine: the original brief's way against woof's serving stack.

Three servers get the same load from the same client with the same photos (N distinct val JPEGs, held in
memory by the client), at each concurrency:

  brief       the brief's way: one Flask process, eager PyTorch fp32 (scripts/brief_baseline.py, started
              here on a free loopback port unless --baseline-url names a running one)
  torchserve  TorchServe direct: POST /predictions/MODEL with its inference key (token authorisation)
  gateway     the woof gateway in front of it: POST /predict?model=MODEL (gunicorn, as `woof serve` runs it)

By default TorchServe (free ports, private temp folder, as `woof bench` and the load test start it) and a
gateway in front of it are started here and stopped at the end; --gateway-url (a running `woof serve`, its
TorchServe at config.properties' addresses unless --torchserve-url / --mgmt-url / --key-file say otherwise)
uses running ones. Per case: req/s, p50/p95/p99 latency (client side), errors (non-200, an answer without
"top_k", socket errors), the server side's CPU seconds per request (user + sys of its whole process tree
before and after the run, through psutil: the Flask process; TorchServe's Java frontend and its Python
workers; those plus the gunicorn master and workers), and the client's own CPU share of the machine.

The client is wrk (Debian's `wrk`, a C event loop, one thread by default, with a Lua script posting the
image bodies) when it is on PATH: it needs far less CPU than Python threads, which matters on 2 cores where
the client competes with the servers. Without it (apt-get install wrk) the project's own load code
(scripts/loadtest.py `run_load`) is the client, and the report says so.

    .venv/bin/python scripts/side_by_side.py                       # 30 s per case, c = 1 and 8, reports/
    .venv/bin/python scripts/side_by_side.py --duration 1 --photos 4 --concurrency 1 --out /tmp/sbs

Floors (the issue's targets for the default archive through the gateway at concurrency 8, on this 2-core
machine): >= 4x the brief's way in req/s, p99 < 100 ms, 0 errors over >= 5,000 requests. Progress goes to
stderr; the table to stdout and to OUT/side_by_side.md and OUT/side_by_side.csv. Run it on an otherwise
idle machine: the client and all three servers share its CPUs.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import math
import os
import platform
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.bench import Server, find_archives, free_ports  # noqa: E402
from scripts.loadtest import listening_pid, val_jpegs  # noqa: E402
from scripts.serve import CONFIG, model_names, read_properties, start_gateway, stop_gateway  # noqa: E402
from woof import processes  # noqa: E402
from woof.errors import WoofError  # noqa: E402
from woof.torchserve_keys import INFERENCE, KEY_FILE_ENV, TorchServeKeys  # noqa: E402

CASES = ("brief", "torchserve", "gateway")
DESCRIBE = {"brief": "the brief's way: Flask + eager PyTorch fp32",
            "torchserve": "TorchServe direct",
            "gateway": "woof gateway -> TorchServe"}
DEFAULT_DURATION = 30.0
REQUEST_TIMEOUT = 60  # seconds; a request slower than this counts as an error
CLIENT_IDS = 1000  # X-Client-Id values the requests rotate through (the gateway limits 20 req/s per client)
FLOOR_RATIO, FLOOR_P99_MS, FLOOR_REQUESTS = 4.0, 100.0, 5000
FLOOR_CONCURRENCY = 8
CSV_FIELDS = ["date", "concurrency", "case", "target", "client", "requests", "errors", "seconds", "rps",
              "p50_ms", "p95_ms", "p99_ms", "server_cpu_s", "server_cpu_ms_per_request", "server_cpu_pct",
              "client_cpu_s", "client_cpu_pct", "first_error", "cpu", "vnni", "torch", "command"]

# wrk's script: every thread reads the photos once (init), then posts them in rotation with a rotating
# X-Client-Id; response() counts answers that are not 200 with "top_k"; with a request limit each thread
# says SBS_DONE when it reached its share (the parent then stops wrk, which otherwise sleeps out -d).
WRK_LUA = r"""
local bodies, headers, path, limit = {}, {}, "/", 0
local sent, answered = 0, 0
threads, bad, first_bad = {}, 0, ""
local offset = 0

function setup(thread)
  thread:set("offset", #threads * 7919)
  table.insert(threads, thread)
end

function init(args)
  path, limit = args[1], tonumber(args[3]) or 0
  offset = tonumber(offset) or 0
  for file in io.lines(args[2]) do
    local f = assert(io.open(file, "rb"))
    bodies[#bodies + 1] = f:read("*a")
    f:close()
  end
  headers["Content-Type"] = "image/jpeg"
  local auth = os.getenv("SBS_AUTHORIZATION")
  if auth and auth ~= "" then headers["Authorization"] = auth end
end

function request()
  local i = offset + sent
  sent = sent + 1
  headers["X-Client-Id"] = "side-by-side-" .. (i % CLIENT_IDS)
  return wrk.format("POST", path, headers, bodies[(i % #bodies) + 1])
end

function response(status, hdrs, body)
  if status ~= 200 or not string.find(body, '"top_k"', 1, true) then
    bad = bad + 1
    if first_bad == "" then
      first_bad = "HTTP " .. status .. ": " .. string.gsub(string.sub(body, 1, 160), "%s+", " ")
    end
  end
  answered = answered + 1
  if limit > 0 and answered == limit then
    io.write("SBS_DONE\n")
    io.flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local errors, first = 0, ""
  for _, t in ipairs(threads) do
    errors = errors + t:get("bad")
    if first == "" then first = t:get("first_bad") end
  end
  local e = summary.errors
  io.write(string.format("SBS_RESULT %d %d %d %d %d %d %d %.1f %.1f %.1f\n", summary.requests, summary.duration,
    errors, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50.0), latency:percentile(95.0), latency:percentile(99.0)))
  io.write("SBS_FIRST_ERROR " .. first .. "\n")
end
""".replace("CLIENT_IDS", str(CLIENT_IDS))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- what a run measures
@dataclass
class Load:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    first_error: str = ""
    client_cpu_s: float = 0.0

    @property
    def rps(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0


class WrkClient:
    """Debian's wrk with WRK_LUA; the photos go to a private temp folder once, which wrk reads at start."""

    name = "wrk"

    def __init__(self, bodies: list[bytes], threads: int = 1):
        self.binary = shutil.which("wrk")
        if self.binary is None:
            raise WoofError("wrk is not installed (apt-get install wrk)")
        self.threads = threads
        self.dir = Path(tempfile.mkdtemp(prefix="woof-side-by-side-"))
        self.script = self.dir / "post_images.lua"
        self.script.write_text(WRK_LUA)
        paths = []
        for i, body in enumerate(bodies):
            path = self.dir / f"{i:04d}.jpg"
            path.write_bytes(body)
            paths.append(str(path))
        self.manifest = self.dir / "photos.txt"
        self.manifest.write_text("\n".join(paths) + "\n")
        version = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout
        self.version = (version.splitlines() or ["wrk"])[0].split(" [")[0]

    def describe(self) -> str:
        return f"{self.version} (C, epoll, {self.threads} thread(s), Lua script posting the image bodies)"

    def run(self, url: str, path: str, concurrency: int, duration: float | None, requests: int | None,
            headers: dict[str, str], keys: TorchServeKeys | None = None) -> Load:
        """`headers`' Authorization (TorchServe's inference key) goes to wrk through its environment."""
        threads = max(1, min(self.threads, concurrency))
        limit = math.ceil(requests / threads) if requests else 0
        seconds = math.ceil(duration) if duration else 3600  # with a request limit: stopped when all are done
        cmd = [self.binary, "-t", str(threads), "-c", str(concurrency), "-d", f"{seconds}s",
               "--timeout", f"{REQUEST_TIMEOUT}s", "-s", str(self.script), url.rstrip("/") + "/",
               "--", path, str(self.manifest), str(limit)]
        env = {**os.environ, "SBS_AUTHORIZATION": headers.get("Authorization", "")}  # not on the command line
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        lines, finished = [], 0
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("SBS_DONE"):
                finished += 1
                if finished == threads:
                    process.send_signal(signal.SIGINT)  # wrk then stops at once and reports
        process.stdout.close()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        result = next((line.split()[1:] for line in lines if line.startswith("SBS_RESULT ")), None)
        if result is None:
            raise WoofError(f"wrk failed (exit {process.returncode}): " + " | ".join(lines[-5:]))
        done, micros, bad, connect, read, write, timeout = (int(v) for v in result[:7])
        p50, p95, p99 = (float(v) / 1000 for v in result[7:10])
        first = next((line[len("SBS_FIRST_ERROR "):] for line in lines if line.startswith("SBS_FIRST_ERROR ")), "")
        sockets = connect + read + write + timeout
        if sockets and not first:
            first = f"socket errors: connect {connect}, read {read}, write {write}, timeout {timeout}"
        return Load(requests=done + connect + read + write + timeout, errors=bad + sockets,
                    seconds=micros / 1e6, p50_ms=p50, p95_ms=p95, p99_ms=p99, first_error=first,
                    client_cpu_s=usage.ru_utime + usage.ru_stime)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class PythonClient:
    """The project's own load code (scripts/loadtest.py run_load: a thread and keep-alive connection per
    client), in this process: its CPU time is this process's."""

    name = "python"

    def __init__(self, bodies: list[bytes]):
        self.bodies = bodies

    def describe(self) -> str:
        return "scripts/loadtest.py run_load (Python threads, http.client; wrk not found on PATH)"

    def run(self, url: str, path: str, concurrency: int, duration: float | None, requests: int | None,
            headers: dict[str, str], keys: TorchServeKeys | None = None) -> Load:
        import psutil

        from scripts.loadtest import run_load

        me = psutil.Process()
        before = me.cpu_times()
        result, _ = run_load(url, path, self.bodies, concurrency, duration or 1e9, requests or 10**9,
                             client_ids=CLIENT_IDS, keys=keys)
        after = me.cpu_times()
        return Load(requests=result.requests, errors=result.errors, seconds=result.seconds,
                    p50_ms=result.percentile(50), p95_ms=result.percentile(95), p99_ms=result.percentile(99),
                    first_error=result.first_error,
                    client_cpu_s=(after.user - before.user) + (after.system - before.system))

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- the servers' CPU time
def server_root(port: int) -> int | None:
    """The process serving a loopback port: its listener, or the gunicorn master above a listening worker."""
    import psutil

    pid = listening_pid(port)
    try:
        while pid is not None:
            parent = psutil.Process(pid).parent()
            if parent is None or "gunicorn" not in " ".join(parent.cmdline()):
                break
            pid = parent.pid
    except psutil.Error:
        pass
    return pid


def tree_cpu_seconds(roots: list[int]) -> float:
    """user + sys CPU seconds of these processes and all their descendants, the reaped ones included
    (children_user/children_system), so a worker that exits between two readings is still counted."""
    import psutil

    seen, total = set(), 0.0
    for root in roots:
        try:
            top = psutil.Process(root)
            procs = [top, *top.children(recursive=True)]
        except psutil.Error:
            continue
        for p in procs:
            if p.pid in seen:
                continue
            seen.add(p.pid)
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            total += t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)
    return total


# ---------------------------------------------------------------- the machine
def machine() -> dict[str, str]:
    import torch

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine(), platform.processor()):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    vnni = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return {"cpu": cpu, "cores": str(os.cpu_count()), "vnni": f"yes ({', '.join(vnni)})" if vnni else "no",
            "torch": torch.__version__}


def default_data() -> Path:
    """The 320 px val when it is there (data/imagewoof2-320), else the shared 160 px copy."""
    for candidate in (REPO / "data" / "imagewoof2-320", REPO.parent / "shared" / "data" / "imagewoof2-160"):
        if (candidate / "val").is_dir():
            return candidate
    return REPO.parent / "shared" / "data" / "imagewoof2-160"


def default_model() -> str:
    names = model_names(read_properties(CONFIG))
    return names[0] if names else "lite0-int8"


# ---------------------------------------------------------------- the brief's way
def spawn_baseline(model_dir: str, threads: int, log_dir: Path) -> tuple[subprocess.Popen, str, Path]:
    """Start scripts/brief_baseline.py on a free loopback port (tied to this process); wait_baseline waits."""
    (port,) = free_ports(1)
    cmd = [sys.executable, str(REPO / "scripts" / "brief_baseline.py"), "--port", str(port),
           "--model-dir", str(model_dir), "--threads", str(threads)]
    log_file = log_dir / "brief_baseline.log"
    process = processes.start(cmd, log_file, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    processes.tie(process.pid)
    return process, f"http://127.0.0.1:{port}", log_file


def wait_baseline(process: subprocess.Popen, url: str, log_file: Path, timeout: float = 300.0) -> None:
    """Return once the baseline's /healthz is ok (it answers after loading and warming up the model)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop_baseline(process)
            tail = log_file.read_text(errors="replace").strip().splitlines()[-3:] if log_file.exists() else []
            raise WoofError(f"the brief baseline did not come up at {url}: " + " | ".join(tail))
        time.sleep(0.3)


def stop_baseline(process: subprocess.Popen) -> None:
    processes.stop(process, 10)
    processes.untie(process.pid)


# ---------------------------------------------------------------- report
def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def make_row(concurrency: int, case: str, target: str, client: str, load: Load, server_cpu_s: float) -> dict:
    ok = load.requests - load.errors
    cores = os.cpu_count() or 1
    return {"concurrency": concurrency, "case": case, "target": target, "client": client,
            "requests": load.requests, "errors": load.errors, "seconds": round(load.seconds, 2),
            "rps": round(load.rps, 1), "p50_ms": _round(load.p50_ms), "p95_ms": _round(load.p95_ms),
            "p99_ms": _round(load.p99_ms), "server_cpu_s": round(server_cpu_s, 2),
            "server_cpu_ms_per_request": round(1000 * server_cpu_s / ok, 1) if ok else None,
            "server_cpu_pct": round(100 * server_cpu_s / (load.seconds * cores), 1) if load.seconds else None,
            "client_cpu_s": round(load.client_cpu_s, 2),
            "client_cpu_pct": round(100 * load.client_cpu_s / (load.seconds * cores), 1) if load.seconds else None,
            "first_error": load.first_error}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


TABLE_HEAD = ("| c | case | req/s | p50 ms | p95 ms | p99 ms | errors / requests | server CPU ms/req "
              "| server CPU % | client CPU % |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")


def table(rows: list[dict]) -> str:
    lines = [TABLE_HEAD]
    for r in rows:
        lines.append(f"| {r['concurrency']} | {DESCRIBE[r['case']]} ({r['target']}) | {r['rps']:.1f} "
                     f"| {fmt(r['p50_ms'])} | {fmt(r['p95_ms'])} | {fmt(r['p99_ms'])} "
                     f"| {r['errors']} / {r['requests']} "
                     f"| {fmt(r['server_cpu_ms_per_request'])} | {fmt(r['server_cpu_pct'])} "
                     f"| {fmt(r['client_cpu_pct'])} |")
    return "\n".join(lines)


def floors(rows: list[dict]) -> list[tuple[str, bool, str]]:
    """The issue's floors for the gateway at concurrency 8 (the highest concurrency run, if 8 was not)."""
    levels = sorted({r["concurrency"] for r in rows})
    if not levels:
        return []
    level = FLOOR_CONCURRENCY if FLOOR_CONCURRENCY in levels else levels[-1]
    by = {r["case"]: r for r in rows if r["concurrency"] == level}
    gateway, brief = by.get("gateway"), by.get("brief")
    if gateway is None:
        return []
    note = "" if level == FLOOR_CONCURRENCY else f" [measured at c={level}, not {FLOOR_CONCURRENCY}]"
    ratio = gateway["rps"] / brief["rps"] if brief and brief["rps"] else None
    return [
        (f">= {FLOOR_RATIO:g}x the brief's way in req/s", ratio is not None and ratio >= FLOOR_RATIO,
         (f"{ratio:.2f}x ({gateway['rps']:.1f} vs {brief['rps']:.1f} req/s)" if ratio is not None else "-") + note),
        (f"p99 < {FLOOR_P99_MS:g} ms", gateway["p99_ms"] is not None and gateway["p99_ms"] < FLOOR_P99_MS,
         f"{fmt(gateway['p99_ms'])} ms" + note),
        (f"0 errors over >= {FLOOR_REQUESTS:,} requests",
         gateway["errors"] == 0 and gateway["requests"] >= FLOOR_REQUESTS,
         f"{gateway['errors']} errors / {gateway['requests']:,} requests" + note),
    ]


def floor_lines(rows: list[dict]) -> list[str]:
    return [f"- {name}: {'met' if ok else 'NOT met'} ({value})" for name, ok, value in floors(rows)]


def write_report(out: Path, rows: list[dict], meta: dict[str, str]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    md, csv_path = out / "side_by_side.md", out / "side_by_side.csv"
    text = [
        "# Side by side: the brief's way vs woof's serving stack", "",
        f"- date: {meta['date']}",
        f"- machine: {meta['cpu']}, {meta['cores']} cores; VNNI: {meta['vnni']}; torch {meta['torch']}; "
        f"load average at the start {meta['load_average']} (1, 5, 15 min: a quiet machine reads near 0)",
        f"- command: `{meta['command']}`",
        f"- client: {meta['client']}",
        f"- photos: {meta['photos']}",
        f"- load per case: {meta['load']}",
        f"- servers: {meta['servers']}", "",
        table(rows), "",
        "req/s counts answered requests (HTTP 200 with `top_k`); latency is the client's, per request; "
        "errors are any other answer or a socket error. Server CPU: user + sys seconds of the server's whole "
        "process tree during the run (brief: the Flask process; TorchServe: its Java frontend and Python "
        "workers; gateway: gunicorn master and workers plus TorchServe), per answered request and as a share "
        "of all cores. Client CPU: the load generator's own share of all cores.", "",
        f"Floors (the issue's targets for the default archive through the gateway at c={FLOOR_CONCURRENCY}):", "",
        *floor_lines(rows), "",
    ]
    md.write_text("\n".join(text))
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "date": meta["date"], "cpu": meta["cpu"], "vnni": meta["vnni"],
                             "torch": meta["torch"], "command": meta["command"]})
    return md, csv_path


# ---------------------------------------------------------------- run
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, help=f"seconds of load per case (default {DEFAULT_DURATION:g}; with "
                                                  "--requests: a cap, none by default)")
    p.add_argument("--requests", type=int, help="requests per case instead of a duration")
    p.add_argument("--photos", type=int, default=200, help="distinct val JPEGs the client rotates through "
                                                           "(default: %(default)s)")
    p.add_argument("--concurrency", default="1,8", help="client connections, comma-separated (default: %(default)s)")
    p.add_argument("--out", default=str(REPO / "reports"), help="folder for side_by_side.md/.csv "
                                                                "(default: reports/)")
    p.add_argument("--data", default=str(default_data()),
                   help="Imagewoof root with val/ (default: data/imagewoof2-320 when present, else "
                        "../shared/data/imagewoof2-160: %(default)s)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds (at most; 20 requests per connection) "
                                                             "of untimed warm-up before each case")
    p.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                   help="load generator: wrk when on PATH (auto), or the project's Python load code")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default: %(default)s)")
    p.add_argument("--model", default=default_model(),
                   help="TorchServe model for the torchserve and gateway cases (default: config.properties' "
                        "first load_models entry, %(default)s)")
    p.add_argument("--store", default=str(REPO / "model_store"), help="model store (default: %(default)s)")
    p.add_argument("--model-dir", default=str(REPO / "training" / "checkpoints" / "lite0"),
                   help="the brief baseline's trained model (default: %(default)s)")
    p.add_argument("--baseline-threads", type=int, default=2, help="torch threads of the brief baseline (default 2)")
    p.add_argument("--baseline-url", help="use this running brief baseline instead of starting one")
    p.add_argument("--gateway-url", help="use this running gateway (woof serve) instead of starting one; its "
                                         "TorchServe is config.properties' unless --torchserve-url says otherwise")
    p.add_argument("--torchserve-url", help="use this running TorchServe instead of starting one")
    p.add_argument("--mgmt-url", help="its management API")
    p.add_argument("--key-file", help="its key_file.json (default: $WOOF_TORCHSERVE_KEY_FILE, else where woof "
                                      "serve runs TorchServe)")
    p.add_argument("--ts-workers", type=int, default=int(read_properties(CONFIG).get("default_workers_per_model", 1)),
                   help="TorchServe workers per model when started here (default: config.properties)")
    p.add_argument("--workers", type=int, default=int(os.environ.get("WOOF_GATEWAY_WORKERS") or 2),
                   help="gunicorn workers of a gateway started here (default: %(default)s)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("WOOF_GATEWAY_THREADS") or 8),
                   help="threads per gunicorn worker (default: %(default)s)")
    args = p.parse_args(argv)
    try:
        args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        p.error("--concurrency takes integers, e.g. 1,8")
    if not args.levels or min(args.levels) < 1:
        p.error("--concurrency takes positive integers, e.g. 1,8")
    if args.duration is None and args.requests is None:
        args.duration = DEFAULT_DURATION
    if args.gateway_url and not args.torchserve_url:  # a running woof serve: its TorchServe is config.properties'
        props = read_properties(CONFIG)
        args.torchserve_url = props.get("inference_address", "http://127.0.0.1:8080")
        args.mgmt_url = args.mgmt_url or props.get("management_address", "http://127.0.0.1:8081")
    for url in (args.baseline_url, args.gateway_url, args.torchserve_url, args.mgmt_url):
        if url and urllib.parse.urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
            p.error(f"{url} is not a loopback address: this benchmark stays on loopback")
    return args


def command_line(argv: list[str] | None) -> str:
    words = sys.argv[1:] if argv is None else argv
    return shlex.join([os.path.relpath(sys.executable, Path.cwd()) if sys.executable.startswith(str(REPO))
                       else sys.executable, "scripts/side_by_side.py", *words])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        rows, _ = run(args, command_line(argv))
    except WoofError as e:
        print(f"side_by_side: error: {e}", file=sys.stderr)
        return 2
    return 1 if any(r["errors"] for r in rows) else 0


def run(args: argparse.Namespace, command: str) -> tuple[list[dict], dict[str, str]]:
    bodies = val_jpegs(Path(args.data), args.photos)
    if len(bodies) < args.photos:
        log(f"warning: only {len(bodies)} val JPEGs in {args.data}")
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), **machine(),
            "command": command, "load_average": " ".join(f"{v:.2f}" for v in os.getloadavg())}
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
    rows: list[dict] = []
    with ExitStack() as stack:
        client = WrkClient(bodies, args.wrk_threads) if use_wrk else PythonClient(bodies)
        stack.callback(client.close)
        if not use_wrk:
            log("wrk is not on PATH (apt-get install wrk): the client is scripts/loadtest.py's Python load code, "
                "which costs more client CPU on 2 cores")
        meta["client"] = client.describe()
        meta["photos"] = (f"{len(bodies)} distinct val JPEGs from {args.data} "
                          f"({sum(map(len, bodies)) / len(bodies) / 1024:.0f} KB on average), held in memory")
        meta["load"] = (f"{args.duration:g} s" if args.duration else "") + (
            f"{' or ' if args.duration else ''}{args.requests} requests" if args.requests else "") + (
            f", after an untimed warm-up of at most {args.warmup:g} s; concurrency {args.concurrency}")
        logs = Path(tempfile.mkdtemp(prefix="woof-side-by-side-logs-"))  # the baseline's and gateway's logs
        temp = [logs]

        # the brief's way: start it first, it loads while TorchServe starts
        baseline = None
        if not args.baseline_url:
            log(f"starting the brief baseline ({args.model_dir}, {args.baseline_threads} threads)")
            baseline, baseline_url, baseline_log = spawn_baseline(args.model_dir, args.baseline_threads, logs)
            stack.callback(stop_baseline, baseline)
        # TorchServe: a running one, or one started here (private temp folder, free ports)
        ts = stack.enter_context(Server(Path(args.store), args.torchserve_url, args.mgmt_url, log=log,
                                        workers=args.ts_workers, key_file=args.key_file))
        if not ts.started_here and ts.is_registered(args.model):
            log(f"{args.model}: already served at {ts.url}")
        else:
            ts.register(find_archives(Path(args.store), [args.model])[0])
        keys = TorchServeKeys(ts.keys.path, ts.mgmt, margin=(args.duration or 600) + 60)  # renewed before a run
        if baseline is not None:
            wait_baseline(baseline, baseline_url, baseline_log)
            args.baseline_url = baseline_url
            log(f"brief baseline is up at {baseline_url}")
        gateway = args.gateway_url
        if not gateway:
            base = logs / "gateway"
            base.mkdir()
            (port,) = free_ports(1)
            (base / "prometheus").mkdir()
            env = {"WOOF_TORCHSERVE_URL": ts.url, "WOOF_TORCHSERVE_MGMT_URL": ts.mgmt,
                   "WOOF_DEFAULT_MODEL": args.model, "WOOF_ADMIN_TOKEN": secrets.token_hex(16),
                   "WOOF_MODEL_STORE": str(Path(args.store).resolve()), "WOOF_STATE_DIR": str(base / "state"),
                   "PROMETHEUS_MULTIPROC_DIR": str(base / "prometheus"), KEY_FILE_ENV: str(ts.keys.path or "")}
            process = start_gateway(env, f"127.0.0.1:{port}", args.workers, args.threads, log_dir=base, log=log,
                                    tied=True)  # with its access log, as woof serve runs it
            stack.callback(stop_gateway, process)
            gateway = f"http://127.0.0.1:{port}"
        ts_how = f"{args.ts_workers} worker(s), started here" if ts.started_here else "running"
        gw_how = "running" if args.gateway_url else f"{args.workers} x {args.threads} threads, started here"
        meta["servers"] = (f"brief baseline {args.baseline_url} ({args.model_dir}, fp32 eager, "
                           f"{args.baseline_threads} torch threads); TorchServe {ts.url} ({args.model}, {ts_how}); "
                           f"gateway {gateway} ({gw_how})")

        roots = {"brief": [server_root(urllib.parse.urlsplit(args.baseline_url).port)],
                 "torchserve": [server_root(urllib.parse.urlsplit(ts.url).port)],
                 "gateway": [server_root(urllib.parse.urlsplit(gateway).port)]}
        if baseline is not None and roots["brief"][0] is None:
            roots["brief"] = [baseline.pid]
        roots["gateway"] += roots["torchserve"]
        for case, pids in roots.items():
            if any(pid is None for pid in pids):
                log(f"warning: cannot find the {case} server's processes: its CPU time is not counted")
            roots[case] = [pid for pid in pids if pid is not None]
        targets = {"brief": (args.baseline_url, "/predict", f"{Path(args.model_dir).name} fp32"),
                   "torchserve": (ts.url, f"/predictions/{args.model}", args.model),
                   "gateway": (gateway, f"/predict?model={urllib.parse.quote(args.model)}", args.model)}

        log(f"{len(bodies)} photos, client {client.name}, {meta['load']}; {os.cpu_count()} CPUs")
        for concurrency in args.levels:
            for case in CASES:
                url, path, target = targets[case]
                headers = keys.headers(INFERENCE) if case == "torchserve" else {}
                extra = {"keys": keys if case == "torchserve" else None}
                if args.warmup > 0:
                    client.run(url, path, concurrency, args.warmup, 20 * concurrency, headers, **extra)
                before = tree_cpu_seconds(roots[case])
                load = client.run(url, path, concurrency, args.duration, args.requests, headers, **extra)
                used = tree_cpu_seconds(roots[case]) - before
                rows.append(make_row(concurrency, case, target, client.name, load, used))
                r = rows[-1]
                log(f"c={concurrency:<3} {case:<10} {r['rps']:7.1f} req/s  p50 {fmt(r['p50_ms'])}  p99 "
                    f"{fmt(r['p99_ms'])} ms  {r['errors']} errors / {r['requests']}  server CPU "
                    f"{fmt(r['server_cpu_ms_per_request'])} ms/req  client CPU {fmt(r['client_cpu_pct'])} %")
                if load.first_error:
                    log(f"    first error: {load.first_error}")
    for folder in temp:  # kept when the run failed (an exception skips this)
        shutil.rmtree(folder, ignore_errors=True)
    md, csv_path = write_report(Path(args.out), rows, meta)
    print(table(rows))
    print("\nfloors (the gateway at c=8):")
    print("\n".join(floor_lines(rows)))
    print(f"\nwritten: {md} and {csv_path}")
    return rows, meta


if __name__ == "__main__":
    sys.exit(main())
