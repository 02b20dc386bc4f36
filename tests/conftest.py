"""Shared fixtures: the real Imagewoof data (read-only, from ../shared) and a tiny trained model."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The 160 px Imagewoof the tests read: $WOOF_TEST_DATA, else the shared copy beside the repository, else
# data/ (where `woof data fetch --size 160` puts it). scripts/test.sh says in one line how to get it if none.
DATA_PLACES = [ROOT.parent / "shared" / "data" / "imagewoof2-160", ROOT / "data" / "imagewoof2-160"]
DATA = Path(os.environ.get("WOOF_TEST_DATA") or next((p for p in DATA_PLACES if (p / "train").is_dir()),
                                                     DATA_PLACES[0]))


@pytest.fixture(scope="session")
def data_root() -> Path:
    assert (DATA / "train").is_dir(), f"the Imagewoof data must be at {DATA}"
    return DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, data_root) -> Path:
    """Lite0 fine-tuned for one epoch on 6 real images per class at 96 px (seconds on a CPU), with the
    fixed 10 % train hold-out kept out, and its fp32 open-set answer calibrated on 2 hold-out photos per class
    and a few open-set photos (the archives need a calibration)."""
    from training.openset import calibrate, openset_root
    from training.recipe import TrainConfig
    from training.train import train
    from woof import card as cards

    out = tmp_path_factory.mktemp("tiny") / "tiny-lite0"
    config = TrainConfig(epochs=1, batch_size=12, limit_per_class=6, train_size=96, eval_size=112,
                         workers=0, warmup_epochs=0.5, holdout=0.1)
    train(config, data_root, out, progress=False)
    card = cards.read_card(out)
    card["open_set"] = calibrate(out, data_root, [], openset_root(), ["fp32"], target=0.9, progress=False,
                                 limit_per_class=2, log=lambda *a: None)
    cards.write_card(out, card)
    return out


def val_images(data_root: Path, per_class: int = 1, imagenet_val: bool = True) -> list[tuple[Path, str]]:
    """(path, wnid) of the first real val images of each class."""
    from woof.breeds import WNIDS

    out = []
    for wnid in WNIDS:
        files = sorted(p for p in (data_root / "val" / wnid).iterdir()
                       if p.name.startswith("ILSVRC2012_val_") == imagenet_val)
        out += [(p, wnid) for p in files[:per_class]]
    return out


# ---------------------------------------------------------------- TorchServe (tests/test_handler.py)
TINY_ARCHIVES = {"tiny": "torchscript", "tiny-onnx": "onnx"}


@pytest.fixture(scope="session")
def tiny_archives(tmp_path_factory, tiny_model_dir, data_root) -> Path:
    """A model store with tiny_model_dir archived as TorchScript (`tiny`) and ONNX (`tiny-onnx`)."""
    from handlers.archive import build_archive

    store = tmp_path_factory.mktemp("store")
    with torch_threads(1):
        for name, fmt in TINY_ARCHIVES.items():
            build_archive(tiny_model_dir, name, fmt, data_root, store, parity_images=10, log=lambda *a: None)
    return store


@contextlib.contextmanager
def torch_threads(n: int):
    """Run torch on n threads (a second busy process on 2 cores makes 2 OpenMP threads crawl)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def torchserve(tmp_path_factory, tiny_archives):
    """A real TorchServe on free loopback ports serving the tiny archives; stopped at session end.

    It gets its own temp folder (TorchServe keeps its pid file and worker sockets there and refuses a
    second start while the pid file names a live server), its own logs and a copy of the repository's
    config.properties with the ports, model store and load_models replaced. Token authorisation is on, as
    deployed: `.key_file` is its key_file.json (in `.base`, where it runs) and `.keys` a
    woof.torchserve_keys.TorchServeKeys for it: `.keys.headers("inference" | "management")` gives the
    Authorization header (renewed when due).
    """
    import shutil
    from types import SimpleNamespace

    from scripts.bench import free_ports
    from scripts.serve import render_config, server_keys, start_torchserve, stop_torchserve

    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.fail("TorchServe needs Java 17+, and there is no java here: apt-get install openjdk-17-jre-headless")
    base = tmp_path_factory.mktemp("torchserve")
    inference, management, metrics, grpc_inference, grpc_management = free_ports(5)
    config = render_config(ROOT / "config.properties", base / "config.properties", {
        "inference_address": f"http://127.0.0.1:{inference}",
        "management_address": f"http://127.0.0.1:{management}",
        "metrics_address": f"http://127.0.0.1:{metrics}",
        "grpc_inference_port": str(grpc_inference),
        "grpc_management_port": str(grpc_management),
        "model_store": str(tiny_archives),
        "load_models": ",".join(f"{name}.mar" for name in TINY_ARCHIVES),
    })
    env = {"TMPDIR": str(base), "TEMP": str(base), "LOG_LOCATION": str(base / "logs"),
           "METRICS_LOCATION": str(base / "logs")}
    start_torchserve(config, cwd=base, env=env, timeout=150, log=lambda *a: None, tied=True)
    keys = server_keys(config, base)
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{inference}", management=f"http://127.0.0.1:{management}",
                              models=list(TINY_ARCHIVES), store=tiny_archives, logs=base / "logs", base=base,
                              key_file=keys.path, keys=keys)
    finally:
        stop_torchserve(env, cwd=base)


# ---------------------------------------------------------------- the gateway (tests/test_gateway*.py, web, bot)
GATEWAY_ADMIN_TOKEN = "test-admin-token"


@pytest.fixture(scope="session")
def gateway(tmp_path_factory, torchserve):
    """The real gateway under gunicorn (2 workers x 8 threads) on a free loopback port, in front of the
    `torchserve` fixture; stopped at session end. Used by the gateway, web-page and Telegram-bot tests.

    Attributes (stable): `.url` (http://127.0.0.1:PORT), `.admin_token` (WOOF_ADMIN_TOKEN; send
    `Authorization: Bearer <token>`), `.torchserve` (the torchserve fixture object), `.default_model`
    ("tiny-onnx", WOOF_DEFAULT_MODEL), `.state_dir` (its shared state file's folder), `.store` (the model
    store), `.logs` (gateway.log, gateway_access.log), `.env` (the gateway's environment overrides).
    Limits as deployed: 10 MB uploads, 20 requests/s per client (burst 40) counted per `X-Client-Id`
    header, else per peer address, so a test sending many requests should send its own client ids.
    Tests that change the default model or the A/B split must put them back.
    """
    from types import SimpleNamespace

    from scripts.bench import free_ports
    from scripts.serve import start_gateway, stop_gateway

    base = tmp_path_factory.mktemp("gateway")
    (port,) = free_ports(1)
    env = {"WOOF_TORCHSERVE_URL": torchserve.url, "WOOF_TORCHSERVE_MGMT_URL": torchserve.management,
           "WOOF_TORCHSERVE_KEY_FILE": str(torchserve.key_file),
           "WOOF_ADMIN_TOKEN": GATEWAY_ADMIN_TOKEN, "WOOF_DEFAULT_MODEL": "tiny-onnx",
           "WOOF_MODEL_STORE": str(torchserve.store), "WOOF_STATE_DIR": str(base / "state"),
           "PROMETHEUS_MULTIPROC_DIR": str(base / "prometheus"), "OMP_NUM_THREADS": "1"}
    (base / "prometheus").mkdir()
    process = start_gateway(env, f"127.0.0.1:{port}", workers=2, threads=8, log_dir=base / "logs", timeout=60,
                            log=lambda *a: None, tied=True)
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}", admin_token=GATEWAY_ADMIN_TOKEN, torchserve=torchserve,
                              default_model="tiny-onnx", state_dir=base / "state", store=torchserve.store,
                              logs=base / "logs", env=env)
    finally:
        stop_gateway(process)


@pytest.fixture(scope="session")
def gateway_openapi(gateway):
    """The gateway's live OpenAPI spec as a schemathesis schema (tests/test_gateway_schema.py)."""
    import schemathesis

    return schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
