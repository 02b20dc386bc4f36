"""The side-by-side benchmark on real processes: the brief's way (scripts/brief_baseline.py, one Flask process with
eager PyTorch) answers as `woof predict` does and refuses a non-image, and scripts/side_by_side.py measures it,
TorchServe and the gateway (the session's `torchserve` and `gateway` fixtures: no second stack) in one table."""

from __future__ import annotations

import csv
import json
import urllib.error
import urllib.request

from tests.conftest import ROOT, torch_threads, val_images

LITE0 = ROOT / "training" / "checkpoints" / "lite0"


def post(url: str, body: bytes, content_type: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def test_brief_baseline_matches_woof_predict_and_side_by_side_measures_three_servers(tmp_path, data_root, gateway):
    from scripts import side_by_side
    from training.predict import Predictor

    photo, wnid = val_images(data_root, per_class=1)[0]
    process, url, log_file = side_by_side.spawn_baseline(str(LITE0), 1, tmp_path)
    try:
        with torch_threads(1):  # `woof predict`'s code path, while the baseline loads the same model
            expected = Predictor(LITE0).predict_one(photo)["top_k"][0]
        side_by_side.wait_baseline(process, url, log_file, timeout=120)

        status, answer = post(f"{url}/predict", photo.read_bytes(), "image/jpeg")
        assert status == 200, answer
        assert answer["top_k"][0]["breed"] == expected["breed"]
        assert abs(answer["top_k"][0]["probability"] - expected["probability"]) < 1e-3
        assert answer["model"] == "lite0" and answer["answer"] in ("breed", "other_dog", "not_dog")

        status, answer = post(f"{url}/predict", b"these bytes are no photo", "text/plain")
        assert 400 <= status < 500 and answer["error"]["code"] == "invalid_image", (status, answer)

        out = tmp_path / "report"
        ts = gateway.torchserve
        code = side_by_side.main([
            "--duration", "1", "--photos", "4", "--concurrency", "1", "--warmup", "0", "--out", str(out),
            "--data", str(data_root), "--model-dir", str(LITE0), "--baseline-url", url,
            "--torchserve-url", ts.url, "--mgmt-url", ts.management, "--key-file", str(ts.key_file),
            "--gateway-url", gateway.url, "--model", gateway.default_model])
        assert code == 0
        rows = list(csv.DictReader((out / "side_by_side.csv").open()))
        assert [r["case"] for r in rows] == ["brief", "torchserve", "gateway"]
        for r in rows:
            assert int(r["requests"]) > 0 and int(r["errors"]) == 0, r
            assert float(r["rps"]) > 0 and float(r["p99_ms"]) > 0 and float(r["server_cpu_s"]) > 0, r
        report = (out / "side_by_side.md").read_text()
        assert "the brief's way" in report and "TorchServe direct" in report and "woof gateway" in report
        assert "p99 < 100 ms: NOT met" in report or "p99 < 100 ms: met" in report
    finally:
        side_by_side.stop_baseline(process)
