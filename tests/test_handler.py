"""TorchServe serving: export parity, archives, the handler in a real TorchServe and in-process."""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import json
import shutil
import stat
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile

import numpy as np
import pytest
from PIL import Image

from woof.breeds import WNIDS
from woof.card import open_set_rule
from woof.cli import main
from woof.errors import WoofError

from .conftest import ROOT, torch_threads, val_images


def post(torchserve, path: str, body: bytes, content_type: str = "application/octet-stream") -> tuple[int, object]:
    """POST to the fixture's inference API, with its inference key."""
    status, data = torchserve.keys.urlopen("inference", f"{torchserve.url}{path}", method="POST", data=body,
                                           headers={"Content-Type": content_type}, timeout=60)
    return status, json.loads(data)


def get(torchserve, path: str):
    """GET from the fixture's management API, with its management key."""
    status, data = torchserve.keys.urlopen("management", f"{torchserve.management}{path}", timeout=30)
    assert status == 200, data
    return json.loads(data)


def raw(method: str, url: str, headers: dict | None = None) -> tuple[int, dict]:
    """A call with exactly these headers (no key unless given): (status, JSON body)."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def png(width: int, height: int, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height)).save(buf, "PNG")
    return buf.getvalue()


def check_schema(result: dict, card: dict) -> None:
    assert result["model"] == card["name"] and result["model_version"] == card["version"]
    probabilities = [p["probability"] for p in result["top_k"]]
    assert len(result["top_k"]) == 10 and sorted(p["wnid"] for p in result["top_k"]) == list(WNIDS)
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-3)
    assert all(p["breed"] for p in result["top_k"])
    assert 0.0 <= result["dog_probability"] <= 1.0
    # an archive's card holds its own format's rule; a model folder's card one per format (fp32 here)
    rule = card["open_set"] if "calibrated_for" in card["open_set"] else open_set_rule(card, "fp32")
    assert rule["calibrated_for"] == "fp32" and rule["rule"] == "imagenet_dog_share"
    assert result["answer"] in ("breed", "other_dog", "not_dog")
    assert result["is_known_breed"] is (result["answer"] == "breed")
    # the gate to "breed" needs dog_threshold; a turned-away photo is a dog or not by other_dog_threshold
    kind = rule.get("other_dog_threshold", rule["dog_threshold"])
    dog = result["dog_probability"]
    assert {"breed": dog >= rule["dog_threshold"] - 1e-4, "other_dog": dog >= kind - 1e-4,
            "not_dog": dog < kind + 1e-4}[result["answer"]]
    if result["answer"] != "other_dog":
        assert result["other_breed"] is None


def reference(model, paths: list, spec: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Breed probabilities through `woof eval`'s code path, and the open-set inputs: ImageNet and breed logits."""
    import torch

    from training.data import Sample
    from training.evaluate import predict_logits
    from woof.preprocess import preprocess, softmax

    logits, _ = predict_logits(model, [Sample(p, 0) for p in paths], spec, workers=0, progress=False)
    with torch.inference_mode():
        breed, imagenet = model.forward_both(torch.from_numpy(np.stack([preprocess(p, spec) for p in paths])))
    return softmax(logits.astype(np.float64)), imagenet.numpy(), breed.numpy()


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with torch_threads(1):
        yield


# ---------------------------------------------------------------- export and archives
def test_export_parity_on_real_val_images(tiny_model_dir, data_root, tmp_path, tiny_archives, monkeypatch):
    import training.export as ex

    # the archives' exports were checked when they were built; their figures are in their cards
    for name, fmt in (("tiny", "torchscript"), ("tiny-onnx", "onnx")):
        with zipfile.ZipFile(tiny_archives / f"{name}.mar") as z:
            card = json.loads(z.read("card.json"))
            assert {"card.json", "preprocess.py", "woof_handler.py", ex.SERIALIZED_FILE[fmt]} <= set(z.namelist())
            if fmt == "onnx":
                (tmp_path / "archived.onnx").write_bytes(z.read("model.onnx"))
        figures = card["archive"]["parity"]
        assert card["archive"]["format"] == fmt and card["archive"]["name"] == name
        assert figures["images"] == 10 and figures["top1_agreement"] == 1.0 and figures["max_abs_diff"] < 1e-3
    # INT8 from that same fp32 ONNX (the dynamo export is the slow part, so reuse it)
    monkeypatch.setattr(ex, "export_onnx", lambda model, spec, path, card=None: shutil.copy(
        tmp_path / "archived.onnx", path) and path)
    out = tmp_path / "out"
    results = ex.export(tiny_model_dir, out, data_root, ["onnx-int8"], parity_images=10, calibration_images=20,
                        min_int8_agreement=0.0, log=lambda *a: None)
    int8 = results["onnx-int8"]
    assert int8["parity"]["images"] == 10 and 0.0 <= int8["parity"]["top1_agreement"] <= 1.0
    assert np.isfinite(int8["parity"]["max_abs_diff"]) and int8["quantization"]["quant_format"] == "QDQ"
    assert int8["quantization"]["activation_type"] == "QUInt8"  # U8S8: S8S8 gave no speed-up on this CPU
    assert [p.name for p in out.iterdir()] == ["model.int8.onnx"]  # the fp32 file was temporary
    size = card["preprocessing"]["input_size"]
    for n in (1, 3):  # dynamic batch axis
        breed, imagenet = ex.run_export(out / "model.int8.onnx", "onnx-int8", np.zeros((n, 3, size, size), np.float32))
        assert breed.shape == (n, 10) and imagenet.shape == (n, 1000)
    # the INT8 card's accuracy: the file's own answers on real val images, counted per set
    from training.data import list_samples, subset_per_class

    measured = ex.evaluate_export(out / "model.int8.onnx", "onnx-int8", data_root, card["preprocessing"],
                                  progress=False, limit_per_class=3)
    samples = subset_per_class(list_samples(data_root, "val"), 3)
    logits, _ = ex.run_export(out / "model.int8.onnx", "onnx-int8", ex.image_batch([s.path for s in samples],
                                                                                     card["preprocessing"]))
    expected = int((logits.argmax(1) == np.array([s.label for s in samples])).sum())
    assert measured["val"]["total"] == 30 and measured["val"]["correct"] == expected
    subset = [s.path.name.startswith("ILSVRC2012_val_") for s in samples]
    assert measured["val_imagenet_val_subset"]["total"] == sum(subset)
    with pytest.raises(WoofError, match="does not match PyTorch"):
        ex.check_parity("onnx", {"images": 20, "top1_agreement": 0.95, "max_abs_diff": 1e-5})
    with pytest.raises(WoofError, match="does not match PyTorch"):
        ex.check_parity("torchscript", {"images": 20, "top1_agreement": 1.0, "max_abs_diff": 2e-3})
    with pytest.raises(WoofError, match="INT8 export agrees"):
        ex.check_parity("onnx-int8", {"images": 20, "top1_agreement": 0.5, "max_abs_diff": 3.0})


def test_archive_errors_are_readable_and_leave_no_files(tiny_model_dir, data_root, tmp_path, capsys, monkeypatch):
    store = tmp_path / "store"

    def archive(model_dir, *extra):
        code = main(["archive", "--model-dir", str(model_dir), "--name", "x", "--format", "onnx",
                     "--store", str(store), "--data", str(data_root), *extra])
        return code, capsys.readouterr().err

    no_card = tmp_path / "no-card"
    no_card.mkdir()
    shutil.copy(tiny_model_dir / "model.safetensors", no_card)
    code, err = archive(no_card)
    assert code == 2 and "woof: error: no model card" in err
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    shutil.copy(tiny_model_dir / "card.json", corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    code, err = archive(corrupt)
    assert code == 2 and "corrupt" in err
    assert not store.exists() or list(store.iterdir()) == []  # no half-written .mar, no temp folders
    uncalibrated = tmp_path / "uncalibrated"
    shutil.copytree(tiny_model_dir, uncalibrated, ignore=shutil.ignore_patterns("last.pt"))
    card = json.loads((uncalibrated / "card.json").read_text())
    code, err = archive(uncalibrated, "--format", "onnx-int8")  # calibrated for fp32 only
    assert code == 2 and "no open-set calibration for onnx-int8" in err and "woof calibrate" in err
    del card["open_set"]
    (uncalibrated / "card.json").write_text(json.dumps(card))
    code, err = archive(uncalibrated)
    assert code == 2 and "no open-set calibration for fp32" in err
    assert not store.exists() or list(store.iterdir()) == []
    assert main(["archive", "lite9"]) == 2 and "unknown archive 'lite9'" in capsys.readouterr().err
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    code, err = archive(tiny_model_dir)
    assert code == 2 and "torch-model-archiver is not installed" in err


def test_repository_config_is_loopback_only(tmp_path):
    from scripts.serve import read_properties, render_config

    props = read_properties(ROOT / "config.properties")
    for key in ("inference_address", "management_address", "metrics_address"):
        assert props[key].startswith("http://127.0.0.1:"), key
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1"
    # token authorisation on (TorchServe's default: the switch must not be there), archives from the store only
    assert "disable_token_authorization" not in props and props["enable_model_api"] == "true"
    assert props["allowed_urls"] == "(?!)" and float(props["token_expiration_min"]) > 0
    assert int(props["max_request_size"]) >= 12_000_000 and props["load_models"] == "lite0-int8.mar,lite2-int8.mar"
    copy = read_properties(render_config(ROOT / "config.properties", tmp_path / "c", {"model_store": "/x", "a": "1"}))
    assert copy == {**props, "model_store": "/x", "a": "1"}


def test_serve_builds_only_missing_or_stale_archives(tiny_archives, tiny_model_dir, tmp_path, monkeypatch):
    import handlers.archive as ar
    from scripts.serve import ensure_archives

    model_dir = tmp_path / "models" / "m"
    shutil.copytree(tiny_model_dir, model_dir)
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(tiny_archives / "tiny-onnx.mar", store / "m-onnx.mar")
    shutil.copy(tiny_archives / "tiny.mar", store / "m.mar")
    built = []
    monkeypatch.setattr(ar, "CHECKPOINTS", model_dir.parent)
    monkeypatch.setattr(ar, "ARCHIVES", {"m-onnx": ("m", "onnx"), "m": ("m", "torchscript"),
                                         "m-int8": ("m", "onnx-int8")})
    monkeypatch.setattr(ar, "build_archive", lambda d, name, fmt, *a, **k: built.append((name, fmt)))
    props = {"model_store": "store", "load_models": "m-onnx.mar,m.mar"}
    assert ensure_archives(props, tmp_path, None, log=lambda *a: None) == [] and built == []
    assert ar.is_current(store / "m.mar", model_dir, "torchscript")
    assert not ar.is_current(store / "m.mar", model_dir, "onnx")
    card = json.loads((model_dir / "card.json").read_text())
    (model_dir / "card.json").write_text(json.dumps({**card, "open_set": {"threshold": 0.4}}))  # a newer card
    ensure_archives({**props, "load_models": "m-onnx.mar,m-int8.mar"}, tmp_path, str(tmp_path), log=lambda *a: None)
    assert built == [("m-onnx", "onnx"), ("m-int8", "onnx-int8")]
    with pytest.raises(WoofError, match="other.mar"):
        ensure_archives({**props, "load_models": "other.mar"}, tmp_path, None)


def test_serve_refuses_old_java(tmp_path, monkeypatch):
    from scripts.serve import check_java

    fake = tmp_path / "bin" / "java"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho \'java version "1.8.0_292"\' >&2\n')
    fake.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(WoofError, match="needs Java 17 or newer.*Java 8"):
        check_java()


# ---------------------------------------------------------------- a real TorchServe
def test_each_archive_answers_real_photos(torchserve, tiny_model_dir, data_root):
    card = json.loads((tiny_model_dir / "card.json").read_text())
    photos = val_images(data_root)[:3]
    for name in torchserve.models:
        for path, _ in photos:
            status, result = post(torchserve, f"/predictions/{name}", path.read_bytes(), "image/jpeg")
            assert status == 200, result
            check_schema(result, card)


def test_torchserve_gives_the_eval_code_path_probabilities(torchserve, tiny_model_dir, data_root):
    from training.checkpoint import load_model
    from woof.openset import answers

    model, card = load_model(tiny_model_dir)
    paths = [p for p, _ in val_images(data_root)[3:7]]
    probabilities, imagenet, breed = reference(model, paths, card["preprocessing"])
    expected = answers(imagenet, open_set_rule(card, "fp32"), breed)
    for name in torchserve.models:
        for i, path in enumerate(paths):
            status, result = post(torchserve, f"/predictions/{name}", path.read_bytes())
            assert status == 200, result
            served = {p["wnid"]: p["probability"] for p in result["top_k"]}
            np.testing.assert_allclose([served[w] for w in WNIDS], probabilities[i], atol=1e-4, err_msg=name)
            assert result["dog_probability"] == pytest.approx(expected[i]["dog_probability"], abs=1e-4)
            assert result["answer"] == expected[i]["answer"] and result["other_breed"] == expected[i]["other_breed"]


BAD_INPUTS = {
    "not an image": lambda jpeg: b"this is plain text, not a photo",
    "truncated JPEG": lambda jpeg: jpeg[: len(jpeg) // 2],
    "zero bytes": lambda jpeg: b"",
    "1x1 px": lambda jpeg: png(1, 1),
    "20000x1 px": lambda jpeg: png(20000, 1),
    "pixel bomb 9000x9000": lambda jpeg: png(9000, 9000, "1"),
}


def test_bad_inputs_get_422_and_the_worker_survives(torchserve, data_root):
    jpeg = val_images(data_root)[0][0].read_bytes()
    name = "tiny-onnx"
    worker_pid = get(torchserve, f"/models/{name}")[0]["workers"][0]["pid"]
    for what, make in BAD_INPUTS.items():
        status, result = post(torchserve, f"/predictions/{name}", make(jpeg))
        assert status == 422, (what, result)
        assert result["error"]["code"] == "invalid_image" and result["error"]["message"], what
        status, result = post(torchserve, f"/predictions/{name}", jpeg)
        assert status == 200 and len(result["top_k"]) == 10, what
    assert get(torchserve, f"/models/{name}")[0]["workers"][0]["pid"] == worker_pid
    status, result = post(torchserve, "/predictions/tiny", b"")
    assert status == 422 and result["error"]["code"] == "invalid_image"


# ---------------------------------------------------------------- ShellTorch (CVE-2023-43654): URLs and keys
@contextlib.contextmanager
def counting_server():
    """A loopback HTTP server offering a .mar; records every connection it accepts (a TLS attempt too)."""
    connections: list[tuple] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def setup(self):
            connections.append(self.client_address)
            super().setup()

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"PK")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port, connections
    finally:
        server.shutdown()
        server.server_close()


REFUSED = {"code": 400, "type": "InvalidKeyException",
           "message": "Token Authorization failed. Token either incorrect, expired, or not provided correctly"}


def test_torchserve_registers_no_archive_from_a_url(torchserve):
    """allowed_urls=(?!): every URL is refused before any download; names in the model store still load
    (the fixture's load_models, the gateway's /admin/register)."""
    register = f"{torchserve.management}/models?"
    with counting_server() as (port, connections):
        urls = [f"http://127.0.0.1:{port}/evil.mar", f"HTTP://127.0.0.1:{port}/evil.mar",
                f"https://127.0.0.1:{port}/evil.mar", f"file://{torchserve.store}/tiny.mar"]
        for url in urls:
            query = urllib.parse.urlencode({"url": url, "model_name": "evil", "synchronous": "true"})
            status, body = raw("POST", register + query, torchserve.keys.headers("management"))
            assert (status, body) == (404, {"code": 404, "type": "ModelNotFoundException",
                                            "message": f"Given URL {url} does not match any allowed URL(s)"})
        # without the management key the request is refused before the URL is even looked at
        assert raw("POST", register + urllib.parse.urlencode({"url": urls[0]})) == (400, REFUSED)
        time.sleep(0.5)  # a download would have connected by now
    assert connections == []
    assert "evil" not in {m["modelName"] for m in get(torchserve, "/models")["models"]}


def test_torchserve_refuses_calls_without_its_key(torchserve):
    m, i = torchserve.management, torchserve.url
    calls = {("GET", f"{m}/models"): "management", ("DELETE", f"{m}/models/no-such-model"): "management",
             ("GET", f"{m}/token?type=management"): "API", ("GET", f"{i}/ping"): "inference",
             ("POST", f"{i}/predictions/tiny"): "inference"}
    wrong = {"management": "inference", "inference": "management", "API": "management"}
    for (method, url), kind in calls.items():
        for headers in ({}, {"Authorization": "Bearer not-the-key"}, torchserve.keys.headers(wrong[kind])):
            status, body = raw(method, url, headers)
            assert status == 400 and body["type"] == "InvalidKeyException", (method, url, headers.keys(), body)
            if kind != "API":  # /token words it "Authentication"
                assert body == REFUSED
    assert raw("GET", f"{i}/ping", torchserve.keys.headers("inference")) == (200, {"status": "Healthy"})
    assert raw("GET", f"{m}/models", torchserve.keys.headers("management"))[0] == 200
    # the key file is the owner's alone, and TorchServe logs no key
    assert stat.S_IMODE(torchserve.key_file.stat().st_mode) == 0o600
    data = json.loads(torchserve.key_file.read_text())
    secrets = [data["management"]["key"], data["inference"]["key"], data["API"]["key"]]
    logs = b"".join(f.read_bytes() for f in torchserve.logs.rglob("*") if f.is_file())
    assert logs and not [s for s in secrets if s.encode() in logs]
    assert not [s for s in secrets if s in repr(torchserve.keys)]


# ---------------------------------------------------------------- the handler in-process (batches)
class FakeContext:
    """The parts of TorchServe's Context that BaseHandler and WoofHandler use."""

    def __init__(self, model_dir, serialized_file):
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None}
        self.manifest = {"model": {"modelName": "t", "serializedFile": serialized_file}}
        self.status, self.content_type = {}, {}
        self.metrics = type("Metrics", (), {"add_time": lambda *a, **k: None})()

    def set_response_status(self, code=200, phrase="", idx=0):
        self.status[idx] = code

    def set_response_content_type(self, idx, value):
        self.content_type[idx] = value

    def get_request_header(self, idx, key):
        return None


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("name,serialized", [("tiny", "model.pt"), ("tiny-onnx", "model.onnx")])
def test_a_bad_image_in_a_batch_fails_alone(tiny_archives, data_root, tmp_path, name, serialized):
    from handlers.woof_handler import WoofHandler

    with zipfile.ZipFile(tiny_archives / f"{name}.mar") as z:
        z.extractall(tmp_path)
    card = json.loads((tmp_path / "card.json").read_text())
    jpegs = [p.read_bytes() for p, _ in val_images(data_root)[:3]]
    handler, context = WoofHandler(), FakeContext(tmp_path, serialized)
    handler.initialize(context)
    singles = [handler.handle([{"body": bytearray(j)}], context)[0] for j in jpegs]
    batch = [{"body": bytearray(jpegs[0])}, {"body": bytearray(b"GIF89a-not-really")},
             {"data": jpegs[1]}, {"body": base64.b64encode(jpegs[2]).decode()}]
    context.status.clear()
    out = handler.handle(batch, context)
    assert len(out) == 4 and context.status == {1: 422}
    assert set(context.content_type.values()) == {"application/json"}
    assert out[1]["error"]["code"] == "invalid_image"
    for result, single in zip([out[0], out[2], out[3]], singles):
        check_schema(result, card)
        assert [p["wnid"] for p in result["top_k"]] == [p["wnid"] for p in single["top_k"]]
        np.testing.assert_allclose([p["probability"] for p in result["top_k"]],
                                   [p["probability"] for p in single["top_k"]], atol=2e-4)
    context.status.clear()
    assert [r["error"]["code"] for r in handler.handle([{"body": b""}, {}], context)] == ["invalid_image"] * 2
    assert context.status == {0: 422, 1: 422}
    # the archive's calibration decides: nothing is a dog at dog_threshold and other_dog_threshold 1
    card["open_set"].update(dog_threshold=1.0, other_dog_threshold=1.0)
    (tmp_path / "card.json").write_text(json.dumps(card))
    handler.initialize(context)
    answer = handler.handle([{"body": jpegs[0]}], context)[0]
    assert answer["answer"] == "not_dog" and answer["is_known_breed"] is False and answer["other_breed"] is None
    # a broken or missing calibration stops the worker with a one-line reason, never a silent default
    from woof.openset import RuleError

    card["open_set"]["dog_threshold"] = 1.01
    (tmp_path / "card.json").write_text(json.dumps(card))
    with pytest.raises(RuleError, match=r"dog_threshold must be a number in \[0, 1\], not 1.01"):
        handler.initialize(context)
    del card["open_set"]
    (tmp_path / "card.json").write_text(json.dumps(card))
    with pytest.raises(RuleError, match="expected an open-set rule 'imagenet_dog_share'"):
        handler.initialize(context)
    assert handler.describe_handle()["archive"]["format"] in ("torchscript", "onnx")
