"""`woof serve` runs TorchServe and the gateway together; a stale pid file does not block it; TorchServe killed
mid-run is restarted by `woof serve` itself, with the registered archives, default model and A/B split back;
SIGTERM stops both. A private TorchServe and gateway (not the shared fixtures), since this one is killed."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from scripts.bench import free_ports
from scripts.serve import ping, render_config

from .conftest import ROOT, val_images


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def status(url: str) -> int | None:
    try:
        return requests.get(url, timeout=5).status_code
    except requests.RequestException:
        return None


def test_woof_serve_survives_torchserve_restart_and_stops_cleanly(tiny_archives, data_root, tmp_path):
    ports = free_ports(6)
    config = render_config(ROOT / "config.properties", tmp_path / "config.properties", {
        "inference_address": f"http://127.0.0.1:{ports[0]}", "management_address": f"http://127.0.0.1:{ports[1]}",
        "metrics_address": f"http://127.0.0.1:{ports[2]}", "grpc_inference_port": str(ports[3]),
        "grpc_management_port": str(ports[4]), "model_store": str(tiny_archives), "load_models": "tiny-onnx.mar"})
    env = {**os.environ, "TMPDIR": str(tmp_path), "TEMP": str(tmp_path), "LOG_LOCATION": str(tmp_path / "logs"),
           "METRICS_LOCATION": str(tmp_path / "logs"), "WOOF_STATE_DIR": str(tmp_path / "state"),
           "OMP_NUM_THREADS": "1", "WOOF_READ_TIMEOUT": "10", "WOOF_ADMIN_TOKEN": "serve-test-token"}
    for key in ("WOOF_TORCHSERVE_URL", "WOOF_TORCHSERVE_MGMT_URL", "WOOF_DEFAULT_MODEL", "WOOF_MODEL_STORE",
                "PROMETHEUS_MULTIPROC_DIR", "WOOF_TORCHSERVE_DIR", "WOOF_TORCHSERVE_KEY_FILE"):
        env.pop(key, None)
    gateway = f"http://127.0.0.1:{ports[5]}"
    woof = Path(sys.executable).parent / "woof"
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / ".model_server.pid").write_text(str(dead.pid))  # a TorchServe that died and left its pid file
    serve = subprocess.Popen([str(woof), "serve", "--config", str(config), "--bind", f"127.0.0.1:{ports[5]}",
                              "--workers", "1", "--threads", "4"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    jpeg = val_images(data_root)[0][0].read_bytes()

    def predict():
        return requests.post(f"{gateway}/predict", data=jpeg, headers={"Content-Type": "image/jpeg"}, timeout=30)

    try:
        wait_for(lambda: status(f"{gateway}/readyz") == 200 or serve.poll() is not None, 200, "the gateway")
        assert serve.poll() is None, serve.stdout.read()
        r = predict()
        assert r.status_code == 200 and r.json()["model"] == "tiny-onnx"  # the default: first of load_models
        assert (tmp_path / "logs" / "gateway.pid").is_file() and (tmp_path / "logs" / "gateway.log").is_file()
        # TorchServe runs in the config's folder: its keys are there, the owner's only, and the gateway uses them
        key_file = tmp_path / "key_file.json"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and json.loads(key_file.read_text())["API"]["key"]

        # bounded logs: no per-request lines from TorchServe, one access line per request from the gateway
        logs = tmp_path / "logs"

        def log_state():
            files = [f for f in logs.rglob("*") if f.is_file() and "prometheus" not in f.parts]
            return sum(f.stat().st_size for f in files), {f.name: f.read_bytes().count(b"\n") for f in files
                                                         if f.suffix == ".log"}

        time.sleep(1)
        size_before, lines_before = log_state()
        for _ in range(40):
            assert predict().status_code == 200
        time.sleep(1)
        size_after, lines_after = log_state()
        grown = {name: lines_after.get(name, 0) - lines_before.get(name, 0) for name in lines_after}
        assert grown.get("gateway_access.log") == 40, grown  # one line per request
        assert all(n < 5 for name, n in grown.items() if name != "gateway_access.log"), grown
        assert (size_after - size_before) / 40 <= 500, (size_after - size_before, grown)
        print(f"logs: {(size_after - size_before) / 40:.0f} bytes per request ({grown})")

        admin = {"Authorization": "Bearer serve-test-token"}
        r = requests.post(f"{gateway}/admin/register", json={"archive": "tiny.mar", "model": "tiny"}, headers=admin,
                          timeout=120)
        assert r.status_code == 201, r.text
        r = requests.post(f"{gateway}/admin/split", json={"a": "tiny-onnx", "b": "tiny", "b_percent": 50},
                          headers=admin, timeout=30)
        assert r.status_code == 200, r.text

        # TorchServe is killed under traffic: quick 503s with Retry-After, /readyz says so, /healthz stays up,
        # and woof serve restarts it with the archive registered above
        answers, stop = [], threading.Event()

        def traffic():
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    r = predict()
                    answers.append((r.status_code, time.perf_counter() - start, r.headers.get("Retry-After")))
                except requests.RequestException as e:  # a hang or a dropped connection fails the test below
                    answers.append((type(e).__name__, time.perf_counter() - start, None))
                time.sleep(0.1)

        thread = threading.Thread(target=traffic)
        thread.start()
        time.sleep(0.5)
        java = int((tmp_path / ".model_server.pid").read_text().split()[0])
        killed = time.monotonic()
        os.kill(java, signal.SIGKILL)
        wait_for(lambda: ping(f"http://127.0.0.1:{ports[0]}") is None, 30, "TorchServe to die")
        down = predict()
        assert down.status_code == 503 and down.json()["error"]["code"] == "torchserve_unavailable"
        assert down.headers["Retry-After"] and status(f"{gateway}/healthz") == 200

        def recovered():
            if status(f"{gateway}/readyz") != 200:
                return False
            models = requests.get(f"{gateway}/models", timeout=10).json()
            return {m["name"] for m in models["models"] if m.get("workers_ready")} >= {"tiny", "tiny-onnx"}

        wait_for(recovered, 150, "woof serve to bring TorchServe back with both models")
        recovery = time.monotonic() - killed
        state = requests.get(f"{gateway}/models", timeout=10).json()
        assert state["split"] == {"a": "tiny-onnx", "b": "tiny", "b_percent": 50}, state
        wait_for(lambda: predict().status_code == 200, 30, "predictions again")
        stop.set()
        thread.join(60)
        kinds = {a[0] for a in answers}
        assert kinds <= {200, 503}, answers
        assert 503 in kinds and answers[-1][0] == 200, answers
        assert all(seconds < 5 for code, seconds, _ in answers if code == 503), answers  # no hanging on a dead server
        assert all(retry for code, _, retry in answers if code == 503)
        print(f"recovered {recovery:.0f} s after the kill")

        # SIGTERM: woof serve stops the gateway, then TorchServe, and exits 0
        serve.send_signal(signal.SIGTERM)
        output, _ = serve.communicate(timeout=120)
        assert serve.returncode == 0, output
        assert "stopped" in output and status(f"{gateway}/healthz") is None
        assert "removed the stale TorchServe pid file" in output
        assert "TorchServe died; restarting it" in output and "re-registered tiny" in output
        assert ping(f"http://127.0.0.1:{ports[0]}") is None
        assert not key_file.exists()  # torchserve --stop deletes it
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGTERM)
            serve.wait(120)
        subprocess.run([str(Path(sys.executable).parent / "torchserve"), "--stop", "--foreground"], env=env,
                       cwd=tmp_path, capture_output=True, timeout=90)
