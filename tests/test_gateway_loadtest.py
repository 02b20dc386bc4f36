"""scripts/loadtest.py with tiny bounds against the session's TorchServe: it runs, counts and splits."""

from __future__ import annotations

import importlib.util
import json

from .conftest import DATA, ROOT


def test_loadtest_script_measures_direct_gateway_and_ab(torchserve, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("loadtest", ROOT / "scripts" / "loadtest.py")
    loadtest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loadtest)
    out = tmp_path / "rows.json"
    code = loadtest.main(["--models", "tiny-onnx,tiny", "--store", str(torchserve.store), "--data", str(DATA),
                          "--torchserve-url", torchserve.url, "--mgmt-url", torchserve.management,
                          "--key-file", str(torchserve.key_file),
                          "--duration", "5", "--requests", "30", "--concurrency", "2", "--images", "12",
                          "--ab", "50", "--workers", "1", "--threads", "4", "--warmup", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    rows = json.loads(out.read_text())["rows"]
    assert [(r["case"], r["target"]) for r in rows] == [
        ("tiny-onnx", "torchserve"), ("tiny-onnx", "gateway"), ("tiny", "torchserve"), ("tiny", "gateway"),
        ("A/B tiny-onnx | tiny", "gateway")]
    for r in rows:
        assert r["requests"] == 30 and r["errors"] == 0 and r["rps"] > 0, r
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"], r
        assert r["memory_mb"]["gateway_after"] > 0 and r["memory_mb"]["torchserve_after"] > 0, r
    assert "tiny-onnx" in rows[-1]["note"] and "tiny " in rows[-1]["note"]  # both arms answered
    assert printed.count("gateway/direct req/s") == 2 and "memory from after the warm-up to the end" in printed
    assert "targets (tiny-onnx through the gateway): >= 80 req/s:" in printed
    assert loadtest.main(["--models", "tiny-onnx", "--torchserve-url", "http://10.1.2.3:8080",
                          "--mgmt-url", "http://10.1.2.3:8081", "--store", str(torchserve.store)]) == 2
