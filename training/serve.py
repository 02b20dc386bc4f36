"""`woof serve`: run TorchServe with the repository's config.properties (the gateway and bot join later).

`woof serve --only torchserve` checks Java (17+), builds the archives named in `load_models` that are
missing or older than their trained model, starts TorchServe from the repository root and waits until
/ping answers Healthy. `woof serve --stop` stops it (the server recorded in TorchServe's pid file in
the temp folder, exactly as `torchserve --stop` does). Logs go to logs/ (LOG_LOCATION, METRICS_LOCATION).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from .errors import WoofError

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config.properties"
LOGS = REPO / "logs"
MIN_JAVA = 17
COMPONENTS = ("torchserve",)


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


def ping(inference_address: str, timeout: float = 2.0) -> str | None:
    """TorchServe's /ping status ("Healthy", "Partial Healthy", "Unhealthy"), or None if nothing answers."""
    try:
        with urllib.request.urlopen(f"{inference_address.rstrip('/')}/ping", timeout=timeout) as r:
            return json.loads(r.read()).get("status")
    except urllib.error.HTTPError as e:  # 500 while workers are not ready
        try:
            return json.loads(e.read()).get("status", f"HTTP {e.code}")
        except ValueError:
            return f"HTTP {e.code}"
    except (OSError, ValueError):
        return None


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


def model_ready(management_address: str, name: str, timeout: float = 2.0) -> bool:
    """True when model `name` is registered and has a READY worker (/ping alone says Healthy even
    when an archive in load_models failed to load)."""
    try:
        with urllib.request.urlopen(f"{management_address.rstrip('/')}/models/{name}", timeout=timeout) as r:
            versions = json.loads(r.read())
    except (OSError, ValueError):
        return False
    return any(w.get("status") == "READY" for v in versions for w in v.get("workers", []))


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
    from .archive import ARCHIVES, build_archive, is_current, source_of
    from .data import resolve_root

    store = root / props.get("model_store", "model_store")
    built = []
    for mar in archives_to_load(props):
        name = mar[:-4] if mar.endswith(".mar") else mar
        path = store / f"{name}.mar"
        if name not in ARCHIVES:
            if not path.is_file():
                raise WoofError(f"load_models names {mar}, which is not in {store} and not a woof archive name")
            continue
        model_dir, fmt = source_of(name)
        trained = (model_dir / "card.json").is_file()
        if path.is_file() and (not trained or is_current(path, model_dir, fmt)):
            continue
        if not trained:
            raise WoofError(f"{path} is missing and there is no trained model at {model_dir} to build it from")
        log(f"{'updating' if path.is_file() else 'building'} {path.name} from {model_dir}")
        built.append(build_archive(model_dir, name, fmt, resolve_root(data), store, log=log))
    return built


def start_torchserve(config: str | Path = CONFIG, cwd: str | Path = REPO, env: dict[str, str] | None = None,
                     extra_args: list[str] | None = None, timeout: float = 180.0, foreground: bool = False,
                     log=print) -> int | None:
    """Start TorchServe with `config` from `cwd`; wait for /ping Healthy. Returns the server's pid."""
    config = Path(config).resolve()
    props = read_properties(config)
    address = props.get("inference_address", "http://127.0.0.1:8080")
    names = model_names(props) if "management_address" in props else []
    env = {**os.environ, **(env or {})}
    env.setdefault("LOG_LOCATION", str(LOGS))
    env.setdefault("METRICS_LOCATION", env["LOG_LOCATION"])
    Path(env["LOG_LOCATION"]).mkdir(parents=True, exist_ok=True)
    if ping(address) is not None:
        raise WoofError(f"something already answers at {address} (a TorchServe started earlier? "
                        "woof serve --stop stops it)")
    if _server_pid(env) is not None:
        raise WoofError(f"TorchServe is already running (pid file {pid_file(env)}); woof serve --stop stops it")
    cmd = [torchserve_command(), "--start", "--ts-config", str(config), "--ncs", *(extra_args or [])]
    if foreground:
        cmd.append("--foreground")
    # In the background the Java server inherits the launcher's output: give it a file, not our
    # stdout/stderr (a pipe reading `woof serve` output would otherwise never see EOF).
    output = None if foreground else open(Path(env["LOG_LOCATION"]) / "launcher.log", "ab")
    try:
        process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=output, stderr=output and subprocess.STDOUT)
    finally:
        if output:
            output.close()
    deadline, status = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        time.sleep(0.5)
        status = ping(address)
        if status == "Healthy":
            waiting = [n for n in names if not model_ready(props["management_address"], n)]
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
    log(f"TorchServe is up: inference {address}, management {props.get('management_address', '?')}, "
        f"metrics {props.get('metrics_address', '?')}; logs in {env['LOG_LOCATION']} (pid {pid})")
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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return True
        time.sleep(0.2)
    raise WoofError(f"TorchServe (pid {pid}) did not stop within {timeout:.0f} s")


# ---------------------------------------------------------------- CLI
def add_serve(sub) -> None:
    p = sub.add_parser("serve", help="start (or --stop) the serving stack: TorchServe for now",
                       description="Start TorchServe with config.properties from the repository root, "
                                   "after building the archives it loads that are missing or stale; wait "
                                   "until /ping answers Healthy. Logs: logs/ (LOG_LOCATION).")
    p.add_argument("--only", choices=COMPONENTS, help="start just this component")
    p.add_argument("--stop", action="store_true", help="stop the running TorchServe")
    p.add_argument("--config", metavar="FILE", default=str(CONFIG), help="TorchServe config (default: %(default)s)")
    p.add_argument("--data", metavar="PATH", help="Imagewoof root, needed only to build archives "
                                                  "(default: $WOOF_DATA_ROOT)")
    p.add_argument("--foreground", action="store_true", help="stay attached; Ctrl-C stops TorchServe")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for Healthy (default 180)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    if args.stop:
        print("TorchServe stopped" if stop_torchserve() else "TorchServe is not running")
        return 0
    torchserve_command()
    check_java()
    config = Path(args.config).resolve()
    props = read_properties(config)
    ensure_archives(props, config.parent, args.data)
    start_torchserve(config, cwd=config.parent, timeout=args.timeout, foreground=args.foreground)
    return 0
