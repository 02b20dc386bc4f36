"""`woof serve`: run TorchServe with the repository's config.properties and the Flask gateway in front of it.

`woof serve` starts TorchServe (in the background, as below), then the gateway under gunicorn
(`gateway/gunicorn_conf.py`; bind WOOF_GATEWAY_BIND, default 127.0.0.1:8000) and stays attached:
Ctrl-C or SIGTERM stops the gateway (gracefully) and then TorchServe. `--detach` leaves both running
(the gateway's pid goes to logs/gateway.pid) and `woof serve --stop` stops both. `--only gateway`
runs just the gateway against WOOF_TORCHSERVE_URL / WOOF_TORCHSERVE_MGMT_URL.

`woof serve --only torchserve` checks Java (17+), builds the archives named in `load_models` that are
missing or older than their trained model, starts TorchServe from the repository root and waits until
/ping answers Healthy. `woof serve --stop` stops it (the server recorded in TorchServe's pid file in
the temp folder, exactly as `torchserve --stop` does). Logs go to logs/ (LOG_LOCATION, METRICS_LOCATION).

Token authorisation is on (config.properties): TorchServe writes its keys to key_file.json in the directory
it starts in, which is the config's folder, or $WOOF_TORCHSERVE_DIR when set (the Docker image: a writable
folder under state/; TorchServe then gets a copy of the config there with model_store made absolute).
`woof serve` creates that file empty with mode 0600 before each start, reads it through
woof.torchserve_keys, and gives its path to the gateway as WOOF_TORCHSERVE_KEY_FILE.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from handlers import archive
from training.data import resolve_root
from woof import processes
from woof.errors import WoofError
from woof.torchserve_keys import INFERENCE, KEY_FILE, KEY_FILE_ENV, MANAGEMENT, TorchServeKeys, prepare_key_file

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config.properties"
LOGS = REPO / "logs"
MIN_JAVA = 17
COMPONENTS = ("torchserve", "gateway")
GATEWAY_BIND = "127.0.0.1:8000"
GATEWAY_PID = LOGS / "gateway.pid"
LOG_CONFIG = REPO / "handlers" / "log4j2.xml"  # TorchServe's logging: bounded, no per-request lines
ROTATE_AT = 10 * 1024 * 1024  # woof's own log files (launcher.log, gateway.log) roll at 10 MB, one old copy
TORCHSERVE_DIR_ENV = "WOOF_TORCHSERVE_DIR"  # where TorchServe runs (and writes key_file.json); default: config's


def rotate(path: Path, limit: int = ROTATE_AT) -> Path:
    """Move `path` to `path`.1 when it has grown past `limit` (called at each start); returns `path`."""
    try:
        if path.stat().st_size > limit:
            path.replace(path.with_name(path.name + ".1"))
    except FileNotFoundError:
        pass
    return path  # under LOG_LOCATION when that is set


def read_properties(path: str | Path) -> dict[str, str]:
    """key=value lines of a Java properties file (comments skipped), as TorchServe's launcher reads them."""
    props = {}
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise WoofError(f"cannot read TorchServe config {path}: {e.strerror}") from None
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def render_config(source: str | Path, target: str | Path, overrides: dict[str, str]) -> Path:
    """Copy a config.properties, replacing (or appending) the given keys; comments are kept."""
    lines, seen = [], set()
    for line in Path(source).read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if "=" in line and not line.lstrip().startswith("#") and key in overrides:
            line, _ = f"{key}={overrides[key]}", seen.add(key)
        lines.append(line)
    lines += [f"{k}={v}" for k, v in overrides.items() if k not in seen]
    Path(target).write_text("\n".join(lines) + "\n")
    return Path(target)


def java_command() -> str:
    home = os.environ.get("JAVA_HOME")  # the same rule as the torchserve launcher
    return str(Path(home) / "bin" / "java") if home else "java"


def java_major() -> int:
    """The major version of the Java TorchServe will use; WoofError when there is none."""
    java = java_command()
    try:
        result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        raise WoofError(f"TorchServe needs Java {MIN_JAVA} or newer, and `{java}` cannot be run. Install it "
                        "(e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME.") from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if not match:
        raise WoofError(f"cannot tell the Java version from `{java} -version`: {result.stderr.strip()[:200]}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def check_java() -> int:
    major = java_major()
    if major < MIN_JAVA:
        raise WoofError(f"TorchServe 0.12 needs Java {MIN_JAVA} or newer; `{java_command()}` is Java {major}. "
                        "Install openjdk-17 and put it first on PATH or set JAVA_HOME.")
    return major


def torchserve_command() -> str:
    beside = Path(sys.executable).parent / "torchserve"
    found = str(beside) if beside.is_file() else shutil.which("torchserve")
    if not found:
        raise WoofError("torchserve is not installed: pip install torchserve torch-model-archiver")
    return found


def ping(inference_address: str, timeout: float = 2.0, keys: TorchServeKeys | None = None) -> str | None:
    """TorchServe's /ping status ("Healthy", "Partial Healthy", "Unhealthy"), or None if nothing answers.
    /ping needs the inference key too; without `keys` (or refused) the answer is "HTTP 400"."""
    url = f"{inference_address.rstrip('/')}/ping"
    try:
        status, body = (keys or TorchServeKeys(None)).urlopen(INFERENCE, url, timeout=timeout)
    except (OSError, ValueError):
        return None
    try:
        return json.loads(body).get("status", f"HTTP {status}")  # 500 while workers are not ready
    except (ValueError, AttributeError):
        return f"HTTP {status}"


def pid_file(env: dict[str, str] | None = None) -> Path:
    """Where the torchserve launcher records the server it started (it refuses a second one)."""
    tmp = (env or os.environ).get("TMPDIR") or tempfile.gettempdir()
    return Path(tmp) / ".model_server.pid"


def _server_pid(env: dict[str, str]) -> int | None:
    """The pid in the pid file if that process is alive and is TorchServe's Java server."""
    import psutil

    try:
        pid = int(pid_file(env).read_text().split()[0])
        return pid if "org.pytorch.serve.ModelServer" in psutil.Process(pid).cmdline() else None
    except (OSError, ValueError, IndexError, psutil.Error):
        return None


def model_ready(management_address: str, name: str, timeout: float = 2.0, keys: TorchServeKeys | None = None
                ) -> bool:
    """True when model `name` is registered and has a READY worker (/ping alone says Healthy even
    when an archive in load_models failed to load). `keys`: that server's (the management key)."""
    try:
        status, body = (keys or TorchServeKeys(None)).urlopen(
            MANAGEMENT, f"{management_address.rstrip('/')}/models/{name}", timeout=timeout)
        versions = json.loads(body) if status == 200 else []
        return any(w.get("status") == "READY" for v in versions for w in v.get("workers", []))
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def torchserve_dir(config: str | Path = CONFIG) -> Path:
    """The directory TorchServe runs in, where it writes key_file.json: $WOOF_TORCHSERVE_DIR, else the config's."""
    chosen = os.environ.get(TORCHSERVE_DIR_ENV)
    return Path(chosen).resolve() if chosen else Path(config).resolve().parent


def key_file(cwd: str | Path) -> Path:
    """TorchServe's key file when it runs in `cwd` (its Java server writes it to its working directory)."""
    return Path(cwd).resolve() / KEY_FILE


def server_keys(config: str | Path, cwd: str | Path) -> TorchServeKeys:
    """The keys of the TorchServe started with `config` in `cwd` (renewed through its management API)."""
    return TorchServeKeys(key_file(cwd), read_properties(config).get("management_address", "http://127.0.0.1:8081"))


def config_for(config: str | Path, cwd: str | Path) -> Path:
    """`config` itself when TorchServe runs in its folder; else a copy in `cwd` (created mode 0700) with a
    relative model_store made absolute, as TorchServe resolves it against its working directory."""
    config, cwd = Path(config).resolve(), Path(cwd).resolve()
    if cwd == config.parent:
        return config
    cwd.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = Path(read_properties(config).get("model_store", "model_store"))
    return render_config(config, cwd / "config.properties",
                         {"model_store": str(store if store.is_absolute() else (config.parent / store).resolve())})


def model_names(props: dict[str, str]) -> list[str]:
    """Model names the load_models entries register under ([name=]file.mar)."""
    return [m.split("=", 1)[0] if "=" in m else Path(m).name.removesuffix(".mar")
            for m in (e.strip() for e in props.get("load_models", "").split(","))
            if m and m.upper() not in ("ALL", "STANDALONE")]


def archives_to_load(props: dict[str, str]) -> list[str]:
    value = props.get("load_models", "")
    return [m.split("=", 1)[-1].strip() for m in value.split(",")
            if m.strip() and m.strip().upper() not in ("ALL", "STANDALONE")]


def ensure_archives(props: dict[str, str], root: Path, data: str | None, log=print) -> list[Path]:
    """Build the load_models archives that are missing, or stale next to a retrained model."""

    store = root / props.get("model_store", "model_store")
    built = []
    for mar in archives_to_load(props):
        name = mar[:-4] if mar.endswith(".mar") else mar
        path = store / f"{name}.mar"
        if name not in archive.ARCHIVES:
            if not path.is_file():
                raise WoofError(f"load_models names {mar}, which is not in {store} and not a woof archive name")
            continue
        model_dir, fmt = archive.source_of(name)
        trained = (model_dir / "card.json").is_file()
        if path.is_file() and (not trained or archive.is_current(path, model_dir, fmt)):
            continue
        if not trained:
            raise WoofError(f"{path} is missing and there is no trained model at {model_dir} to build it from")
        log(f"{'updating' if path.is_file() else 'building'} {path.name} from {model_dir}")
        built.append(archive.build_archive(model_dir, name, fmt, resolve_root(data), store, log=log))
    return built


def start_torchserve(config: str | Path = CONFIG, cwd: str | Path = REPO, env: dict[str, str] | None = None,
                     extra_args: list[str] | None = None, timeout: float = 180.0, foreground: bool = False,
                     log=print, tied: bool = False) -> int | None:
    """Start TorchServe with `config` from `cwd`; wait for /ping Healthy. Returns the server's pid.

    tied: the server dies with this process however it ends (tests, woof bench, the load test).
    Its keys: key_file.json in `cwd` (server_keys(config, cwd)), created here empty with mode 0600."""
    config = Path(config).resolve()
    props = read_properties(config)
    address = props.get("inference_address", "http://127.0.0.1:8080")
    names = model_names(props) if "management_address" in props else []
    keys = server_keys(config, cwd)
    env = {**os.environ, **(env or {})}
    env.setdefault("LOG_LOCATION", str(LOGS))
    env.setdefault("METRICS_LOCATION", env["LOG_LOCATION"])
    Path(env["LOG_LOCATION"]).mkdir(parents=True, exist_ok=True)
    if ping(address) is not None:
        raise WoofError(f"something already answers at {address} (a TorchServe started earlier? "
                        "woof serve --stop stops it)")
    if _server_pid(env) is not None:
        raise WoofError(f"TorchServe is already running (pid file {pid_file(env)}); woof serve --stop stops it")
    if pid_file(env).exists():  # left by a TorchServe that died: its launcher would refuse on a reused pid
        pid_file(env).unlink(missing_ok=True)
        log(f"removed the stale TorchServe pid file {pid_file(env)} (no TorchServe runs)")
    prepare_key_file(cwd)  # replaces one a dead server left; TorchServe fills it in and keeps mode 0600
    cmd = [torchserve_command(), "--start", "--ts-config", str(config), "--ncs", "--log-config", str(LOG_CONFIG),
           *(extra_args or [])]
    if foreground:
        cmd.append("--foreground")
    # In the background the Java server inherits the launcher's output: give it a file, not our stdout/stderr
    # (one rotation per start keeps it bounded; with handlers/log4j2.xml it only gets warnings anyway).
    launcher_log = None if foreground else rotate(Path(env["LOG_LOCATION"]) / "launcher.log")
    process = processes.start(cmd, launcher_log, cwd=cwd, env=env, own_session=False)
    deadline, status = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        time.sleep(0.5)
        status = ping(address, keys=keys)
        if status == "Healthy":
            waiting = [n for n in names if not model_ready(props["management_address"], n, keys=keys)]
            if not waiting:
                break
            status = f"Healthy, but not ready yet: {', '.join(waiting)}"
        # the launcher exits at once in the background (0) after recording the Java server's pid
        if process.poll() is not None and (foreground or process.returncode != 0 or _server_pid(env) is None):
            raise WoofError(f"TorchServe stopped while starting; see {env['LOG_LOCATION']}/ts_log.log"
                            + _log_tail(env))
    else:
        detail = _log_tail(env)
        stop_torchserve(env, cwd=cwd)
        raise WoofError(f"TorchServe did not become ready within {timeout:.0f} s (last /ping: {status}); "
                        f"see {env['LOG_LOCATION']}/model_log.log and ts_log.log" + detail)
    pid = _server_pid(env)
    if tied and pid:
        processes.tie(pid)
    log(f"TorchServe is up: inference {address}, management {props.get('management_address', '?')}, "
        f"metrics {props.get('metrics_address', '?')}; keys in {keys.path}; logs in {env['LOG_LOCATION']} "
        f"(pid {pid})")
    if foreground:
        try:
            process.wait()
        except KeyboardInterrupt:
            stop_torchserve(env, cwd=cwd)
    return pid


def _log_tail(env: dict[str, str], lines: int = 6) -> str:
    """The last error lines of the workers' and the server's logs, or else the launcher's last words."""
    logs = Path(env["LOG_LOCATION"])
    found = []
    for name, marker in (("model_log.log", "Error"), ("ts_log.log", "[ERROR]"), ("launcher.log", "")):
        try:
            text = (logs / name).read_text(errors="replace").splitlines()
        except OSError:
            continue
        found = [line for line in text if marker in line][-lines:]
        if found:
            break
    return ("\n  " + "\n  ".join(found)) if found else ""


def stop_torchserve(env: dict[str, str] | None = None, timeout: float = 60.0, cwd: str | Path = REPO) -> bool:
    """Stop the TorchServe recorded in the pid file of env's temp folder. False if none was running.

    (`torchserve --stop` also deletes key_file.json in its working directory: `cwd`.)
    """
    env = {**os.environ, **(env or {})}
    pid = _server_pid(env)
    if pid is None:
        return False
    subprocess.run([torchserve_command(), "--stop", "--foreground"], env=env, cwd=cwd, capture_output=True,
                   text=True, timeout=timeout + 10)
    if processes.wait_gone(pid, timeout, interval=0.2):
        processes.untie(pid)
        return True
    raise WoofError(f"TorchServe (pid {pid}) did not stop within {timeout:.0f} s")


# ---------------------------------------------------------------- gateway (gunicorn)
def gateway_url(bind: str) -> str:
    """The loopback URL that reaches a gunicorn bind address (host:port; 0.0.0.0 and [::] -> loopback)."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def gateway_command(bind: str, workers: int, threads: int, pid: str | Path | None = None,
                    access_log: str | Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "gunicorn", "--config", "python:gateway.gunicorn_conf", "--bind", bind,
           "--workers", str(workers), "--threads", str(threads)]
    if pid:
        cmd += ["--pid", str(pid)]
    if access_log:
        cmd += ["--access-logfile", str(access_log)]
    return cmd + ["gateway:create_app()"]


def start_gateway(env: dict[str, str] | None = None, bind: str = GATEWAY_BIND, workers: int = 2, threads: int = 8,
                  log_dir: str | Path = LOGS, pid: str | Path | None = None, timeout: float = 60.0,
                  access_log: bool = True, log=print, tied: bool = False) -> subprocess.Popen:
    """Start the gateway under gunicorn from the repository root; return once /healthz answers.

    Its output goes to log_dir/gateway.log (access log: gateway_access.log). The process gets its own
    session, so a Ctrl-C in the terminal reaches `woof serve`, which then stops it in order."""
    env = {**os.environ, **(env or {})}
    env.setdefault("WOOF_STATE_DIR", str(Path(log_dir) / "gateway"))
    env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(Path(log_dir) / "gateway" / "prometheus"))
    Path(env["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    url = gateway_url(bind)
    if _http_ok(f"{url}/healthz"):
        raise WoofError(f"something already answers at {url} (a gateway started earlier? woof serve --stop)")
    access = Path(log_dir) / "gateway_access.log" if access_log else None
    if access:  # gunicorn_conf.py rolls it (10 MB, 3 old copies)
        env.setdefault("WOOF_GATEWAY_ACCESS_LOG", str(access))
    process = processes.start(gateway_command(bind, workers, threads, pid), rotate(Path(log_dir) / "gateway.log"),
                              cwd=REPO, env=env)
    if tied:  # gunicorn leads its own process group: the workers go with it
        processes.tie(process.pid, group=True)
    deadline = time.monotonic() + timeout
    while not _http_ok(f"{url}/healthz"):
        if process.poll() is not None:
            raise WoofError(f"the gateway stopped while starting (exit {process.returncode}); "
                            f"see {Path(log_dir) / 'gateway.log'}")
        if time.monotonic() > deadline:
            stop_gateway(process)
            raise WoofError(f"the gateway did not answer {url}/healthz within {timeout:.0f} s; "
                            f"see {Path(log_dir) / 'gateway.log'}")
        time.sleep(0.2)
    log(f"gateway is up: {url} ({workers} workers x {threads} threads; TorchServe "
        f"{env.get('WOOF_TORCHSERVE_URL', 'http://127.0.0.1:8080')}); log {Path(log_dir) / 'gateway.log'}")
    return process


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (OSError, ValueError):
        return False


def stop_gateway(process: subprocess.Popen | int, timeout: float = 30.0) -> bool:
    """SIGTERM (gunicorn finishes the requests in flight), then SIGKILL after `timeout`. False if not running."""
    stopped = processes.stop(process, timeout)
    processes.untie(process if isinstance(process, int) else process.pid)
    return stopped


def _gateway_pid(path: Path = GATEWAY_PID) -> int | None:
    """The pid in gunicorn's pid file, if it is a live gunicorn serving the gateway."""
    import psutil

    try:
        pid = int(path.read_text().split()[0])
        cmdline = " ".join(psutil.Process(pid).cmdline())
        return pid if "gunicorn" in cmdline and "gateway" in cmdline else None
    except (OSError, ValueError, IndexError, psutil.Error):
        return None


def gateway_env(props: dict[str, str], root: Path, keys: Path | None = None) -> dict[str, str]:
    """What the gateway needs to reach this TorchServe (the environment's own values win). `keys`: its
    key file (default: key_file.json in `root`, where a TorchServe started from there writes it)."""
    names = model_names(props)
    env = {"WOOF_TORCHSERVE_URL": props.get("inference_address", "http://127.0.0.1:8080"),
           "WOOF_TORCHSERVE_MGMT_URL": props.get("management_address", "http://127.0.0.1:8081"),
           "WOOF_MODEL_STORE": str((root / props.get("model_store", "model_store")).resolve()),
           KEY_FILE_ENV: str(keys or key_file(root))}
    if names:
        env["WOOF_DEFAULT_MODEL"] = names[0]
    return {k: os.environ.get(k) or v for k, v in env.items()}


# ---------------------------------------------------------------- CLI
def add_serve(sub) -> None:
    p = sub.add_parser("serve", help="start (or --stop) the serving stack: TorchServe and the gateway",
                       description="Start TorchServe with config.properties from the repository root (after "
                                   "building the archives it loads that are missing or stale; waits until "
                                   "/ping answers Healthy), then the Flask gateway under gunicorn, and stay "
                                   "attached: Ctrl-C or SIGTERM stops both. Logs: logs/ (LOG_LOCATION).")
    p.add_argument("--only", choices=COMPONENTS, help="start just this component (torchserve: in the background)")
    p.add_argument("--stop", action="store_true", help="stop the running gateway and TorchServe (of --config)")
    p.add_argument("--detach", action="store_true", help="start and return; woof serve --stop stops them")
    p.add_argument("--config", metavar="FILE", default=str(CONFIG), help="TorchServe config (default: %(default)s)")
    p.add_argument("--data", metavar="PATH", help="Imagewoof root, needed only to build archives "
                                                  "(default: $WOOF_DATA_ROOT)")
    p.add_argument("--foreground", action="store_true", help="with --only torchserve: stay attached; "
                                                             "Ctrl-C stops TorchServe")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for Healthy (default 180)")
    p.add_argument("--bind", default=os.environ.get("WOOF_GATEWAY_BIND") or GATEWAY_BIND,
                   help="gateway address (default: $WOOF_GATEWAY_BIND or %(default)s)")
    p.add_argument("--workers", type=int, default=int(os.environ.get("WOOF_GATEWAY_WORKERS") or 2),
                   help="gunicorn worker processes (default: $WOOF_GATEWAY_WORKERS or %(default)s)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("WOOF_GATEWAY_THREADS") or 8),
                   help="threads per worker (default: $WOOF_GATEWAY_THREADS or %(default)s)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    if args.stop:
        pid = _gateway_pid(log_dir() / GATEWAY_PID.name)
        print("gateway stopped" if pid and stop_gateway(pid) else "gateway is not running")
        print("TorchServe stopped" if stop_torchserve(cwd=torchserve_dir(args.config)) else
              "TorchServe is not running")
        return 0
    config = Path(args.config).resolve()
    props = read_properties(config)
    home = torchserve_dir(config)  # TorchServe's working directory: its key file lands there
    if args.only != "gateway":
        torchserve_command()
        check_java()
        ensure_archives(props, config.parent, args.data)
        ts_config = config_for(config, home)
        start_torchserve(ts_config, cwd=home, timeout=args.timeout,
                         foreground=args.foreground and args.only == "torchserve")
        if args.only == "torchserve":
            return 0
    logs = log_dir()
    if _gateway_pid(logs / GATEWAY_PID.name) is not None:
        raise WoofError(f"a gateway is already running (pid file {logs / GATEWAY_PID.name}); "
                        "woof serve --stop stops it")
    try:
        env = gateway_env(props, config.parent, key_file(home))
        if args.only is None:  # the TorchServe started just now writes its keys there, whatever the environment says
            env[KEY_FILE_ENV] = str(key_file(home))
        gateway = start_gateway(env, args.bind, args.workers, args.threads, log_dir=logs, pid=logs / GATEWAY_PID.name)
    except BaseException:
        if args.only is None:
            stop_torchserve(cwd=home)
        raise
    if args.detach:
        print("woof serve --stop stops " + ("the gateway" if args.only else "the gateway and TorchServe"))
        return 0
    keeper = None
    if args.only is None:  # woof serve started TorchServe: it keeps it alive too
        state_dir = Path(os.environ.get("WOOF_STATE_DIR") or logs / "gateway")
        keeper = TorchServeKeeper(ts_config, home, state_dir, timeout=args.timeout,
                                  log=lambda m: print(m, file=sys.stderr, flush=True))
    return supervise(gateway, stop_ts=args.only is None, cwd=home, logs=logs, keeper=keeper)


def log_dir() -> Path:
    """Where `woof serve` keeps the gateway's log and pid file: TorchServe's LOG_LOCATION, else logs/."""
    return Path(os.environ.get("LOG_LOCATION") or LOGS)


RESTART_DELAYS = (1, 2, 4, 8, 16)  # seconds before each restart attempt; then woof serve gives up (exit 3)
CHECK_EVERY = 2.0  # seconds between checks that TorchServe's Java server still runs


class TorchServeKeeper:
    """Restarts a TorchServe that died (with backoff), then re-registers the archives the gateway's state
    records as registered through /admin/register (the default model and the A/B split live in that state
    already). After RESTART_DELAYS attempts in a row fail, `restart` returns False."""

    def __init__(self, config: Path, cwd: Path, state_dir: Path, timeout: float = 180.0, log=print):
        self.config, self.cwd, self.state_dir, self.timeout, self.log = config, cwd, state_dir, timeout, log
        self.props = read_properties(config)
        self.keys = server_keys(config, cwd)  # a restarted TorchServe rewrites the file: read again on change
        self.restarts = 0

    def alive(self) -> bool:
        return _server_pid({}) is not None

    def restart(self) -> bool:
        for attempt, delay in enumerate(RESTART_DELAYS, 1):
            time.sleep(delay)
            started = time.monotonic()
            try:
                start_torchserve(self.config, cwd=self.cwd, timeout=self.timeout, log=self.log)
            except WoofError as e:
                self.log(f"restart {attempt}/{len(RESTART_DELAYS)} of TorchServe failed: {e}")
                stop_torchserve(cwd=self.cwd)
                continue
            self.restarts += 1
            restored = self.restore()
            self.log(f"TorchServe restarted in {time.monotonic() - started:.0f} s (restart {self.restarts})"
                     + (f"; re-registered {', '.join(restored)}" if restored else ""))
            return True
        return False

    def restore(self) -> list[str]:
        from gateway.state import StateFile

        registered = StateFile(self.state_dir).read().get("registered") or {}
        management = self.props.get("management_address", "http://127.0.0.1:8081")
        done = []
        for name, entry in sorted(registered.items()):
            if model_ready(management, name, keys=self.keys):
                continue
            query = urllib.parse.urlencode({"url": entry["archive"], "model_name": name, "synchronous": "true",
                                            "initial_workers": entry.get("workers", 1)})
            try:
                status, body = self.keys.urlopen(MANAGEMENT, f"{management}/models?{query}", method="POST",
                                                 timeout=self.timeout)
            except (OSError, ValueError) as e:
                status, body = 0, str(e).encode()
            if status == 200:
                done.append(name)
            else:
                self.log(f"could not re-register {name} ({entry['archive']}): HTTP {status} "
                         f"{body[:200].decode(errors='replace')}")
        return done


def supervise(gateway: subprocess.Popen, stop_ts: bool, cwd: Path, logs: Path = LOGS,
              keeper: TorchServeKeeper | None = None) -> int:
    """Wait until Ctrl-C, SIGTERM or the gateway's own exit, restarting TorchServe when it dies (`keeper`);
    then stop the gateway, then TorchServe. Exit 3 when TorchServe cannot be brought back."""
    def on_signal(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_signal)
    print("serving; Ctrl-C stops " + ("the gateway and TorchServe" if stop_ts else "the gateway"), flush=True)
    code = 0
    try:
        while True:
            try:
                code = gateway.wait(timeout=CHECK_EVERY)
                print(f"the gateway exited ({code}); see {logs / 'gateway.log'}", file=sys.stderr)
                break
            except subprocess.TimeoutExpired:
                pass
            if keeper is not None and not keeper.alive():
                print("TorchServe died; restarting it (the gateway answers 503 meanwhile)", file=sys.stderr,
                      flush=True)
                if not keeper.restart():
                    print(f"TorchServe did not come back after {len(RESTART_DELAYS)} attempts; giving up "
                          "(a restart policy may take over)", file=sys.stderr, flush=True)
                    code = 3
                    break
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut the shutdown short
        try:
            stop_gateway(gateway)
            if stop_ts:
                stop_torchserve(cwd=cwd)
            print("stopped", flush=True)
        finally:
            signal.signal(signal.SIGTERM, previous)
    return code if code == 3 else (1 if code else 0)
