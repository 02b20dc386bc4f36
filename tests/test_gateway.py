"""The Flask gateway against a real TorchServe: gunicorn on loopback (the `gateway` fixture), plus
in-process apps (Flask's test client) for limits that need special settings; both call the real server."""

from __future__ import annotations

import io
import json
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest
import requests
from PIL import Image

from gateway import create_app
from gateway.state import split_bucket
from woof.breeds import WNIDS

from .conftest import ROOT, torch_threads, val_images

TIMEOUT = 60


@pytest.fixture(scope="module")
def photos(data_root) -> list[bytes]:
    return [p.read_bytes() for p, _ in val_images(data_root)]


@pytest.fixture(scope="module")
def spec_schema(gateway):
    import schemathesis

    return schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")


def post(gateway, body: bytes | None = None, content_type: str | None = "image/jpeg", files=None, params=None,
         headers=None) -> requests.Response:
    headers = dict(headers or {})
    if content_type and files is None:
        headers["Content-Type"] = content_type
    return requests.post(f"{gateway.url}/predict", data=body, files=files, params=params, headers=headers,
                         timeout=TIMEOUT)


def admin(gateway, method: str, path: str, payload=None, token: str | None = "default") -> requests.Response:
    token = gateway.admin_token if token == "default" else token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, f"{gateway.url}/admin/{path}", json=payload, headers=headers, timeout=300)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code and body["error"]["message"], body
    assert "Traceback" not in response.text and response.headers.get("X-Request-Id")
    return body


def check_prediction(body: dict, model: str, k: int = 3) -> None:
    assert body["model"] == model and body["model_version"] == "1.0.0"
    assert len(body["top_k"]) == k and len({p["wnid"] for p in body["top_k"]}) == k
    assert all(p["wnid"] in WNIDS and p["breed"] for p in body["top_k"])
    probabilities = [p["probability"] for p in body["top_k"]]
    assert probabilities == sorted(probabilities, reverse=True) and all(0 <= p <= 1 for p in probabilities)
    assert isinstance(body["is_known_breed"], bool) and body["latency_ms"] > 0
    assert body["answer"] in ("breed", "other_dog", "not_dog") and body["is_known_breed"] is (body["answer"] == "breed")
    assert body["other_breed"] is None or (body["answer"] == "other_dog" and body["other_breed"]["name"])


def image_bytes(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def metric(text: str, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels` (Prometheus text format)."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


# ---------------------------------------------------------------- predictions
def test_predict_real_photos_raw_and_multipart_matches_torchserve(gateway, photos, spec_schema):
    for jpeg in photos[:3]:
        raw = post(gateway, jpeg)
        assert raw.status_code == 200, raw.text
        check_prediction(raw.json(), "tiny-onnx")
        assert raw.json()["route"] == "default"
        spec_schema["/predict"]["POST"].validate_response(raw)
        multipart = post(gateway, files={"file": ("dog.jpg", jpeg, "image/jpeg")}, params={"top_k": 10})
        assert multipart.status_code == 200, multipart.text
        body = multipart.json()
        check_prediction(body, "tiny-onnx", k=10)
        assert sorted(p["wnid"] for p in body["top_k"]) == list(WNIDS)
        assert sum(p["probability"] for p in body["top_k"]) == pytest.approx(1.0, abs=1e-3)
        # the gateway passes TorchServe's answer through unchanged
        direct = requests.post(f"{gateway.torchserve.url}/predictions/tiny-onnx", data=jpeg, timeout=TIMEOUT,
                               headers={"Content-Type": "image/jpeg",
                                        **gateway.torchserve.keys.headers("inference")}).json()
        assert body["top_k"] == direct["top_k"] and body["is_known_breed"] == direct["is_known_breed"]
        assert body["dog_probability"] == direct["dog_probability"]
    chunked = post(gateway, iter([photos[0][:1000], photos[0][1000:]]))  # no Content-Length
    assert chunked.status_code == 200 and chunked.json()["top_k"] == post(gateway, photos[0]).json()["top_k"]
    # another archive by name; the torchscript and ONNX exports of one model agree
    by_name = post(gateway, photos[0], params={"model": "tiny", "top_k": 1})
    assert by_name.status_code == 200 and by_name.json()["route"] == "requested"
    check_prediction(by_name.json(), "tiny", k=1)
    onnx = post(gateway, photos[0], params={"top_k": 1}).json()
    assert by_name.json()["top_k"][0]["wnid"] == onnx["top_k"][0]["wnid"]
    assert by_name.json()["top_k"][0]["probability"] == pytest.approx(onnx["top_k"][0]["probability"], abs=1e-3)


def test_request_id_is_returned_and_generated(gateway, photos):
    r = post(gateway, photos[0], headers={"X-Request-Id": "trace-42.a_b"})
    assert r.status_code == 200 and r.headers["X-Request-Id"] == "trace-42.a_b" == r.json()["request_id"]
    r = post(gateway, photos[0], headers={"X-Request-Id": "bad id with spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-Id"]) and r.json()["request_id"] == r.headers[
        "X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", requests.get(f"{gateway.url}/healthz", timeout=10).headers["X-Request-Id"])


def _rotated_with_exif(photo: bytes) -> bytes:
    image = Image.open(io.BytesIO(photo)).convert("RGB").transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    return image_bytes(image, "JPEG", quality=95, exif=exif.tobytes())


def _animated_gif(photo: bytes) -> bytes:
    image = Image.open(io.BytesIO(photo)).convert("RGB")
    return image_bytes(image, "GIF", save_all=True, append_images=[image.rotate(20)], duration=100, loop=0)


def _png16(photo: bytes) -> bytes:
    grey = np.asarray(Image.open(io.BytesIO(photo)).convert("L"), dtype=np.uint16) * 257
    return image_bytes(Image.fromarray(grey), "PNG")


GOOD_ODD_IMAGES = {
    "PNG with alpha": lambda p: image_bytes(Image.open(io.BytesIO(p)).convert("RGBA"), "PNG"),
    "16-bit PNG": _png16,
    "CMYK JPEG": lambda p: image_bytes(Image.open(io.BytesIO(p)).convert("CMYK"), "JPEG"),
    "animated GIF": _animated_gif,
    "EXIF-rotated photo": _rotated_with_exif,
}


@pytest.mark.parametrize("what", list(GOOD_ODD_IMAGES))
def test_unusual_but_valid_images_are_answered(gateway, photos, what):
    data = GOOD_ODD_IMAGES[what](photos[1])
    r = post(gateway, data, "application/octet-stream", params={"top_k": 10})
    assert r.status_code == 200, (what, r.text)
    check_prediction(r.json(), "tiny-onnx", k=10)


def _png(width: int, height: int, mode: str = "L") -> bytes:
    return image_bytes(Image.new(mode, (width, height)), "PNG")


# (status, code, request) for each bad input; every answer is a JSON error and the gateway keeps serving
BAD_INPUTS = {
    "empty body": (400, "no_file", lambda g, p: post(g, b"")),
    "no body, no type": (400, "no_file", lambda g, p: post(g, None, None)),
    "no file field": (400, "no_file", lambda g, p: post(g, files={"photo": ("dog.jpg", p, "image/jpeg")})),
    "empty file field": (400, "no_file", lambda g, p: post(g, files={"file": ("dog.jpg", b"", "image/jpeg")})),
    "text file": (415, "unsupported_media_type",
                  lambda g, p: post(g, files={"file": ("notes.txt", b"hello, not a dog", "text/plain")})),
    "wrong content type": (415, "unsupported_media_type", lambda g, p: post(g, p, "text/plain")),
    "JSON body": (415, "unsupported_media_type", lambda g, p: post(g, b'{"image": "x"}', "application/json")),
    "text sent as a JPEG": (422, "invalid_image", lambda g, p: post(g, b"hello, not a dog")),
    "truncated JPEG": (422, "invalid_image", lambda g, p: post(g, p[: len(p) // 2])),
    "1x1 px": (422, "invalid_image", lambda g, p: post(g, _png(1, 1), "image/png")),
    "20000x1 px": (422, "invalid_image", lambda g, p: post(g, _png(20000, 1), "image/png")),
    "decompression bomb": (422, "invalid_image", lambda g, p: post(g, _png(9000, 9000, "1"), "image/png")),
    "over the upload limit": (413, "payload_too_large", lambda g, p: post(g, p + bytes(11 * 1024 * 1024))),
    "multipart over the limit": (413, "payload_too_large", lambda g, p: post(
        g, files={"file": ("big.jpg", p + bytes(11 * 1024 * 1024), "image/jpeg")})),
    "chunked over the limit": (413, "payload_too_large", lambda g, p: post(g, iter([p, bytes(11 * 1024 * 1024)]))),
    "unknown model": (404, "unknown_model", lambda g, p: post(g, p, params={"model": "no-such-model"})),
    "model name with a path": (404, "unknown_model", lambda g, p: post(g, p, params={"model": "../models"})),
    "top_k out of range": (400, "bad_request", lambda g, p: post(g, p, params={"top_k": 11})),
    "top_k not a number": (400, "bad_request", lambda g, p: post(g, p, params={"top_k": "all"})),
    "GET /predict": (405, "method_not_allowed", lambda g, p: requests.get(f"{g.url}/predict", timeout=10)),
    "unknown path": (404, "not_found", lambda g, p: requests.get(f"{g.url}/nope", timeout=10)),
}


@pytest.mark.parametrize("what", list(BAD_INPUTS))
def test_bad_input_gets_its_json_error_and_the_gateway_keeps_serving(gateway, photos, spec_schema, what):
    status, code, send = BAD_INPUTS[what]
    start = time.perf_counter()
    response = send(gateway, photos[2])
    assert time.perf_counter() - start < 20, what
    assert_error(response, status, code)
    if response.request.path_url.startswith("/predict") and status != 405:
        spec_schema["/predict"]["POST"].validate_response(response)
    assert post(gateway, photos[2]).status_code == 200


# ---------------------------------------------------------------- models, health, metrics
def test_models_lists_what_torchserve_hosts_with_card_fields(gateway, spec_schema):
    r = requests.get(f"{gateway.url}/models", timeout=TIMEOUT)
    assert r.status_code == 200
    spec_schema["/models"]["GET"].validate_response(r)
    body = r.json()
    assert body["default"] == gateway.default_model and body["split"] is None
    models = {m["name"]: m for m in body["models"]}
    assert {"tiny", "tiny-onnx"} <= set(models)
    hosted = {m["modelName"] for m in requests.get(f"{gateway.torchserve.management}/models", timeout=10,
                                                   headers=gateway.torchserve.keys.headers("management"))
              .json()["models"]}
    assert set(models) == hosted
    for name, fmt in (("tiny", "torchscript"), ("tiny-onnx", "onnx")):
        m = models[name]
        assert m["version"] == "1.0.0" and m["workers"] >= 1 and m["workers_ready"] >= 1 and m["status"] == "READY"
        assert m["default"] is (name == "tiny-onnx") and m["archive"] == f"{name}.mar"
        assert m["card"]["architecture"] == "efficientnet_lite0" and m["card"]["input_size"] == 112
        assert m["card"]["format"] == fmt and m["card"]["name"] == "tiny-lite0"
        assert set(m["card"]) >= {"val_top1", "val_imagenet_subset_top1", "val_set"}


def test_health_readiness_and_openapi(gateway, spec_schema):
    r = requests.get(f"{gateway.url}/healthz", timeout=10)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = requests.get(f"{gateway.url}/readyz", timeout=10)
    assert r.status_code == 200 and r.json()["default"] == "tiny-onnx" and r.json()["torchserve"] == "Healthy"
    spec_schema["/readyz"]["GET"].validate_response(r)
    spec = requests.get(f"{gateway.url}/openapi.json", timeout=10).json()
    assert spec["openapi"].startswith("3.")
    assert {"/predict", "/models", "/healthz", "/readyz", "/metrics", "/admin/register", "/admin/unregister",
            "/admin/scale", "/admin/default", "/admin/split"} <= set(spec["paths"])


def test_metrics_add_up_over_all_gunicorn_workers(gateway, photos):
    before = requests.get(f"{gateway.url}/metrics", timeout=10).text
    statuses = []
    for i in range(12):  # new connections each: gunicorn spreads them over its 2 workers
        statuses.append(post(gateway, photos[i % len(photos)], params={"model": "tiny"}).status_code)
    statuses.append(post(gateway, b"junk", params={"model": "tiny"}).status_code)
    after = requests.get(f"{gateway.url}/metrics", timeout=10).text
    assert statuses == [200] * 12 + [422]

    def delta(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("woof_gateway_requests_total", endpoint="/predict", model="tiny", status="200") == 12
    assert delta("woof_gateway_requests_total", endpoint="/predict", model="tiny", status="422") == 1
    assert delta("woof_gateway_errors_total", endpoint="/predict", model="tiny", code="invalid_image") == 1
    assert delta("woof_gateway_request_seconds_count", endpoint="/predict", model="tiny") == 13
    assert delta("woof_gateway_torchserve_seconds_count", model="tiny") == 13
    assert "woof_gateway_torchserve_inflight" in after


def test_made_up_model_names_never_become_metric_labels(gateway, photos):
    names = [f"no-such-model-{i}" for i in range(5)]
    for name in names:
        r = post(gateway, photos[0], params={"model": name}, headers={"X-Client-Id": "label-prober"})
        assert_error(r, 404, "unknown_model")
    text = requests.get(f"{gateway.url}/metrics", timeout=10).text
    assert not [name for name in names if name in text]  # the in-flight gauge once took any ?model= as a label


def test_100_concurrent_requests(gateway, photos):
    def one(i):
        start = time.perf_counter()
        r = post(gateway, photos[i % len(photos)], headers={"X-Client-Id": f"crowd-{i}"})
        return r, time.perf_counter() - start

    with ThreadPoolExecutor(100) as pool:
        results = list(pool.map(one, range(100)))
    ok = [r for r, _ in results if r.status_code == 200]
    for r, seconds in results:
        assert seconds < TIMEOUT
        if r.status_code != 200:  # saturation is allowed, but only as a 503 with Retry-After
            assert_error(r, 503, r.json()["error"]["code"])
            assert r.json()["error"]["code"] in ("overloaded", "torchserve_busy") and r.headers["Retry-After"]
    assert len(ok) >= 50, [r.status_code for r, _ in results]
    for r in ok:
        check_prediction(r.json(), "tiny-onnx")
    assert post(gateway, photos[0]).status_code == 200
    # both gunicorn workers took a share, and /metrics (answered by either) counts them all
    pids = {int(p.stem.rsplit("_", 1)[-1]) for p in (gateway.state_dir.parent / "prometheus").glob("counter_*.db")}
    assert len(pids) >= 2, pids


# ---------------------------------------------------------------- admin: auth, promotion flow, unregister under load
def test_admin_needs_the_token(gateway, spec_schema):
    for path, payload in (("register", {"archive": "tiny-onnx.mar"}), ("unregister", {"model": "tiny"}),
                          ("scale", {"model": "tiny", "workers": 2}), ("default", {"model": "tiny"}),
                          ("split", {"a": "tiny", "b": "tiny-onnx", "b_percent": 50})):
        r = admin(gateway, "POST", path, payload, token=None)
        assert_error(r, 401, "unauthorized")
        spec_schema[f"/admin/{path}"]["POST"].validate_response(r)
        assert_error(admin(gateway, "POST", path, payload, token="wrong-token"), 403, "forbidden")
    assert_error(admin(gateway, "DELETE", "split", token=None), 401, "unauthorized")
    assert requests.get(f"{gateway.url}/models", timeout=10).json()["default"] == "tiny-onnx"  # nothing changed
    assert_error(admin(gateway, "POST", "default", "not json"), 400, "bad_request")


def test_admin_endpoints_are_off_without_a_token(gateway, tmp_path):
    app = create_app({"admin_token": "", "state_dir": str(tmp_path), "torchserve_url": gateway.torchserve.url,
                      "torchserve_mgmt_url": gateway.torchserve.management,
                      "torchserve_key_file": str(gateway.torchserve.key_file)})
    r = app.test_client().post("/admin/default", json={"model": "tiny"}, headers={"Authorization": "Bearer "})
    assert r.status_code == 403 and r.json["error"]["code"] == "admin_disabled"


def test_promotion_flow_register_split_default_rollback(gateway, photos, spec_schema, tiny_model_dir, data_root,
                                                         capsys):
    """train (the session's tiny model) -> woof archive -> register -> A/B split -> set default -> roll back
    -> unregister while traffic flows, through the gateway's admin API."""
    from woof.cli import main

    with torch_threads(1):
        assert main(["archive", "--model-dir", str(tiny_model_dir), "--name", "tiny-candidate", "--format", "onnx",
                     "--store", str(gateway.store), "--data", str(data_root)]) == 0, capsys.readouterr().err

    def call(method, path, payload=None, status=200):
        r = admin(gateway, method, path, payload)
        assert r.status_code == status, r.text
        spec_schema[f"/admin/{path}"][method].validate_response(r)
        return r.json()

    try:
        assert call("POST", "register", {"archive": "tiny-candidate.mar"}, 201)["model"] == "tiny-candidate"
        assert_error(admin(gateway, "POST", "register", {"archive": "tiny-candidate"}), 409, "conflict")
        assert_error(admin(gateway, "POST", "register", {"archive": "nope.mar"}), 404, "unknown_archive")
        assert_error(admin(gateway, "POST", "register", {"archive": "../etc/passwd"}), 400, "bad_request")
        r = post(gateway, photos[0], params={"model": "tiny-candidate"})
        assert r.status_code == 200 and r.json()["model"] == "tiny-candidate"

        # 30 % of clients to the candidate, chosen by a stateless hash of X-Client-Id
        assert_error(admin(gateway, "POST", "split", {"a": "tiny-onnx", "b": "nope", "b_percent": 30}), 404,
                     "unknown_model")
        assert_error(admin(gateway, "POST", "split", {"a": "tiny-onnx", "b": "tiny-onnx", "b_percent": 30}), 400,
                     "bad_request")
        assert_error(admin(gateway, "POST", "split", {"a": "tiny-onnx", "b": "tiny", "b_percent": 100}), 400,
                     "bad_request")
        split = call("POST", "split", {"a": "tiny-onnx", "b": "tiny-candidate", "b_percent": 30})
        assert split["split"] == {"a": "tiny-onnx", "b": "tiny-candidate", "b_percent": 30}
        arms = {}
        for i in range(60):
            client = f"user-{i}"
            r = post(gateway, photos[i % len(photos)], headers={"X-Client-Id": client})
            assert r.status_code == 200, r.text
            expected = "tiny-candidate" if split_bucket(client) < 3000 else "tiny-onnx"
            assert r.json()["model"] == expected and r.json()["route"] == ("split-b" if expected != "tiny-onnx"
                                                                           else "split-a")
            arms[client] = expected
        assert 5 <= list(arms.values()).count("tiny-candidate") <= 35
        for client in list(arms)[:10]:  # sticky: the same client gets the same arm again (any worker)
            assert post(gateway, photos[0], headers={"X-Client-Id": client}).json()["model"] == arms[client]
        assert requests.get(f"{gateway.url}/readyz", timeout=10).json()["split"]["b"] == "tiny-candidate"
        assert requests.get(f"{gateway.url}/models", timeout=10).json()["split"]["b_percent"] == 30
        assert_error(admin(gateway, "POST", "unregister", {"model": "tiny-candidate"}), 409, "model_in_use")

        # promote: the candidate becomes the default, the split ends
        assert call("POST", "default", {"model": "tiny-candidate"}) == {"default": "tiny-candidate",
                                                                         "previous": "tiny-onnx"}
        assert call("DELETE", "split")["previous"]["b"] == "tiny-candidate"
        r = post(gateway, photos[0], headers={"X-Client-Id": "user-0"})
        assert r.json()["model"] == "tiny-candidate" and r.json()["route"] == "default"
        state = json.loads((gateway.state_dir / "state.json").read_text())
        assert state["default"] == "tiny-candidate" and "split" not in state
        assert state["registered"]["tiny-candidate"]["archive"] == "tiny-candidate.mar"  # re-registered on restart
        assert {m["name"]: m["default"] for m in requests.get(f"{gateway.url}/models", timeout=10)
                .json()["models"]}["tiny-candidate"] is True

        # roll back to the previous default
        assert call("POST", "default", {"model": "tiny-onnx"})["previous"] == "tiny-candidate"
        assert post(gateway, photos[0]).json()["model"] == "tiny-onnx"

        assert call("POST", "scale", {"model": "tiny-candidate", "workers": 2}) == {"model": "tiny-candidate",
                                                                                  "workers": 2}
        described = requests.get(f"{gateway.torchserve.management}/models/tiny-candidate", timeout=10,
                                 headers=gateway.torchserve.keys.headers("management")).json()
        assert len(described[0]["workers"]) == 2
        assert_error(admin(gateway, "POST", "scale", {"model": "tiny-candidate", "workers": 0}), 400, "bad_request")
        assert_error(admin(gateway, "POST", "scale", {"model": "nope", "workers": 1}), 404, "unknown_model")

        # unregister while traffic flows: 200 until it is gone, then 404, never anything else or a hang
        stop, seen = threading.Event(), []

        def traffic(k):
            while not stop.is_set():
                start = time.perf_counter()
                r = post(gateway, photos[1], params={"model": "tiny-candidate"}, headers={"X-Client-Id": f"load-{k}"})
                seen.append((r.status_code, r.json()["error"]["code"] if r.status_code != 200 else "",
                             time.perf_counter() - start))
                time.sleep(0.05)  # stay under the per-client rate limit

        threads = [threading.Thread(target=traffic, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        assert call("POST", "unregister", {"model": "tiny-candidate"}) == {"model": "tiny-candidate",
                                                                         "unregistered": True}
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(TIMEOUT)
        codes = [(s, c) for s, c, _ in seen]
        assert set(codes) <= {(200, ""), (404, "unknown_model")} and codes[-1] == (404, "unknown_model"), codes
        assert (200, "") in codes and max(s for _, _, s in seen) < 20
        assert_error(admin(gateway, "POST", "unregister", {"model": "tiny-candidate"}), 404, "unknown_model")
        assert post(gateway, photos[0]).status_code == 200
    finally:
        requests.delete(f"{gateway.torchserve.management}/models/tiny-candidate", timeout=60,
                        headers=gateway.torchserve.keys.headers("management"))
        admin(gateway, "DELETE", "split")
        admin(gateway, "POST", "default", {"model": gateway.default_model})
        (gateway.store / "tiny-candidate.mar").unlink(missing_ok=True)


# ---------------------------------------------------------------- TorchServe's keys (token authorisation)
def test_gateway_follows_rotated_torchserve_keys(gateway, photos):
    """Someone renews TorchServe's keys through /token (its API key): the running gunicorn workers read the
    rewritten key file and keep answering, the old keys are dead, and no key reaches the gateway's logs."""
    ts = gateway.torchserve
    old = json.loads(ts.key_file.read_text())
    for kind in ("inference", "management"):
        r = requests.get(f"{ts.management}/token", params={"type": kind}, timeout=10,
                         headers={"Authorization": f"Bearer {old['API']['key']}"})
        assert r.status_code == 200, r.text
    new = json.loads(ts.key_file.read_text())
    assert new["inference"]["key"] != old["inference"]["key"] and new["management"]["key"] != old["management"]["key"]
    stale = requests.get(f"{ts.management}/models", headers={"Authorization": f"Bearer {old['management']['key']}"},
                         timeout=10)
    assert stale.status_code == 400 and stale.json()["type"] == "InvalidKeyException"
    for i in range(4):  # over both gunicorn workers
        r = post(gateway, photos[0], headers={"X-Client-Id": f"rotation-{i}"})
        assert r.status_code == 200, r.text
        assert requests.get(f"{gateway.url}/models", timeout=10).status_code == 200
    assert requests.get(f"{gateway.url}/readyz", timeout=10).status_code == 200
    keys = {old[k]["key"] for k in ("inference", "management", "API")} | {new[k]["key"] for k in ("inference",
                                                                                                  "management")}
    logs = b"".join(f.read_bytes() for f in gateway.logs.rglob("*") if f.is_file())
    assert logs and not [k for k in keys if k.encode() in logs]


def test_gateway_renews_expired_keys_without_a_restart(tiny_archives, tmp_path, monkeypatch):
    """token_expiration_min=0.05: TorchServe's keys die after 3 s. The gateway renews an expired key through
    /token before using it; a key TorchServe refuses although the gateway's clock says it is valid is renewed
    on the refusal and the call sent again. (A TorchServe of its own without models: quick to start.)"""
    import woof.torchserve_keys as tk
    from scripts.bench import free_ports
    from scripts.serve import render_config, start_torchserve, stop_torchserve

    base = tmp_path / "ts"
    base.mkdir()
    inference, management, metrics, grpc_inference, grpc_management = free_ports(5)
    mgmt = f"http://127.0.0.1:{management}"
    config = render_config(ROOT / "config.properties", base / "config.properties", {
        "inference_address": f"http://127.0.0.1:{inference}", "management_address": mgmt,
        "metrics_address": f"http://127.0.0.1:{metrics}", "grpc_inference_port": str(grpc_inference),
        "grpc_management_port": str(grpc_management), "model_store": str(tiny_archives), "load_models": "",
        "token_expiration_min": "0.05"})
    env = {"TMPDIR": str(base), "TEMP": str(base), "LOG_LOCATION": str(base / "logs"),
           "METRICS_LOCATION": str(base / "logs")}
    key_file = base / "key_file.json"

    def management_key() -> tuple[str, float]:
        entry = json.loads(key_file.read_text())["management"]
        return entry["key"], tk.parse_expiry(entry["expiration time"])

    start_torchserve(config, cwd=base, env=env, timeout=120, log=lambda *a: None, tied=True)
    try:
        app = create_app({"torchserve_url": f"http://127.0.0.1:{inference}", "torchserve_mgmt_url": mgmt,
                          "torchserve_key_file": str(key_file), "state_dir": str(tmp_path / "state")})
        client = app.test_client()
        assert client.get("/models").status_code == 200
        first, expires = management_key()
        time.sleep(max(0.0, expires - time.time()) + 0.3)
        dead = requests.get(f"{mgmt}/models", headers={"Authorization": f"Bearer {first}"}, timeout=10)
        assert dead.status_code == 400 and dead.json()["type"] == "InvalidKeyException"  # expired for TorchServe
        r = client.get("/models")
        assert r.status_code == 200 and r.json["models"] == [], r.json
        second, expires = management_key()
        assert second != first
        assert app.extensions["woof"].torchserve.ping() == "Healthy"  # the inference key, renewed likewise

        time.sleep(max(0.0, expires - time.time()) + 0.3)
        real, renewals, renew = time.time, [], tk.TorchServeKeys.renew
        monkeypatch.setattr(tk, "time", SimpleNamespace(time=lambda: real() - 3600, sleep=time.sleep,
                                                        strptime=time.strptime))
        monkeypatch.setattr(tk.TorchServeKeys, "renew", lambda self, kind, rejected=None: (
            renewals.append((kind, rejected)) or renew(self, kind, rejected)))
        r = client.get("/models")  # sent with the expired key, refused, renewed, sent again
        assert r.status_code == 200, r.json
        assert renewals == [("management", second)]  # on TorchServe's refusal, not before
        assert management_key()[0] not in (first, second)
    finally:
        stop_torchserve(env, cwd=base)
    assert not key_file.exists()  # torchserve --stop deletes it


# ---------------------------------------------------------------- limits and faults (in-process app, real TorchServe)
def app_client(torchserve, tmp_path, **settings):
    config = {"torchserve_url": torchserve.url, "torchserve_mgmt_url": torchserve.management,
              "torchserve_key_file": str(torchserve.key_file), "state_dir": str(tmp_path / "state"),
              "default_model": "tiny-onnx", **settings}
    app = create_app(config)
    return app, app.test_client()


def test_saturated_gateway_answers_503_with_retry_after(torchserve, tmp_path, photos):
    app, client = app_client(torchserve, tmp_path, max_inflight=1, queue_timeout=0.05)
    slot = app.extensions["woof"].inflight
    assert slot.acquire(timeout=1)  # another request holds the only TorchServe slot
    try:
        start = time.perf_counter()
        r = client.post("/predict", data=photos[0], content_type="image/jpeg")
        assert r.status_code == 503 and r.json["error"]["code"] == "overloaded" and r.headers["Retry-After"] == "1"
        assert time.perf_counter() - start < 2
    finally:
        slot.release()
    assert client.post("/predict", data=photos[0], content_type="image/jpeg").status_code == 200


def test_rate_limit_per_client(torchserve, tmp_path, photos):
    _, client = app_client(torchserve, tmp_path, rate_limit=0.01, rate_burst=2)  # ~no refill during the test

    def send(client_id):
        return client.post("/predict", data=photos[0], content_type="image/jpeg", headers={"X-Client-Id": client_id})

    assert [send("greedy").status_code for _ in range(2)] == [200, 200]
    r = send("greedy")
    assert r.status_code == 429 and r.json["error"]["code"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1
    assert send("someone-else").status_code == 200


def test_torchserve_down_gives_503_fast_and_slow_gives_504(tmp_path, photos):
    from scripts.bench import free_ports

    (closed,) = free_ports(1)
    app = create_app({"torchserve_url": f"http://127.0.0.1:{closed}", "torchserve_mgmt_url":
                      f"http://127.0.0.1:{closed}", "state_dir": str(tmp_path / "a"), "torchserve_key_file": ""})
    client = app.test_client()
    start = time.perf_counter()
    r = client.post("/predict", data=photos[0], content_type="image/jpeg")
    assert r.status_code == 503 and r.json["error"]["code"] == "torchserve_unavailable" and r.headers["Retry-After"]
    assert client.get("/readyz").status_code == 503 and client.get("/models").status_code == 503
    assert client.get("/healthz").status_code == 200 and time.perf_counter() - start < 5

    # a TorchServe that accepts connections but never answers
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        client = create_app({"torchserve_url": url, "torchserve_mgmt_url": url, "read_timeout": 0.5,
                             "state_dir": str(tmp_path / "b"), "torchserve_key_file": ""}).test_client()
        start = time.perf_counter()
        r = client.post("/predict", data=photos[0], content_type="image/jpeg")
        assert r.status_code == 504 and r.json["error"]["code"] == "torchserve_timeout"
        assert time.perf_counter() - start < 3
    finally:
        silent.close()


def test_an_unhandled_error_is_a_json_500_without_a_stack_trace(torchserve, tmp_path, photos, caplog):
    app, client = app_client(torchserve, tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    app.extensions["woof"].torchserve.predict = broken  # a bug in the gateway itself
    r = client.post("/predict", data=photos[0], content_type="image/jpeg")
    assert r.status_code == 500 and r.json["error"]["code"] == "internal_error"
    assert "secret" not in r.get_data(as_text=True) and "Traceback" not in r.get_data(as_text=True)
    assert r.headers["X-Request-Id"] in r.json["error"]["message"]
    assert "secret internal detail" in caplog.text  # the operator's log has it


def test_state_file_is_shared_and_written_atomically(tmp_path):
    from gateway.state import StateFile, choose_model

    a, b = StateFile(tmp_path), StateFile(tmp_path)  # two workers
    assert a.read() == {} and choose_model(a.read(), "env-default", "c") == ("env-default", "default")

    def bump(i):
        with a.update() if i % 2 else b.update() as state:
            state["n"] = state.get("n", 0) + 1

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(bump, range(40)))
    assert a.read()["n"] == 40 == b.read()["n"]
    with a.update() as state:
        state["split"] = {"a": "x", "b": "y", "b_percent": 50}
    routes = {choose_model(b.read(), "d", f"client-{i}") for i in range(50)}
    assert routes == {("x", "split-a"), ("y", "split-b")}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".state-")] == []  # no temp files left
