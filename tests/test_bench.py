"""`woof bench`: the archives through a real TorchServe (its own, and an already running one)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import zipfile

import numpy as np
import psutil
import pytest

from scripts.bench import pareto_front
from woof.cli import main

from .conftest import TINY_ARCHIVES, torch_threads

pytestmark = pytest.mark.usefixtures("_java")


@pytest.fixture(scope="module")
def _java():
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.fail("TorchServe needs Java 17+, and there is no java here: apt-get install openjdk-17-jre-headless")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_report(out, names: list[str]) -> list[dict]:
    """The four files exist; bench.csv's counts are exactly what bench_predictions.csv implies."""
    for name in ("bench.md", "bench.csv", "bench.png", "bench_predictions.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = read_csv(out / "bench.csv")
    predictions = read_csv(out / "bench_predictions.csv")
    assert [r["archive"] for r in rows] == names and all(r["workload"] == "val" for r in rows)
    for row in rows:
        mine = [p for p in predictions if p["archive"] == row["archive"]]
        assert mine and all(p["error"] == "" and p["predicted"] for p in mine)
        assert all(int(p["correct"]) == (p["predicted"] == p["label"]) for p in mine)
        correct = sum(p["predicted"] == p["label"] for p in mine)
        subset = [p for p in mine if p["imagenet_val"] == "1"]
        assert int(row["val_total"]) == len(mine) and int(row["val_correct"]) == correct
        assert float(row["val_top1"]) == pytest.approx(correct / len(mine), abs=1e-4)
        assert float(row["val_ci_low"]) <= float(row["val_top1"]) <= float(row["val_ci_high"])
        assert int(row["subset_total"]) == len(subset)
        assert int(row["subset_correct"]) == sum(p["predicted"] == p["label"] for p in subset)
        assert int(row["val_errors"]) == 0 and int(row["load_errors"]) == 0
        assert int(row["load_requests"]) > 0 and float(row["requests_per_s"]) > 0
        assert 0 < float(row["p50_ms"]) <= float(row["p95_ms"]) <= float(row["p99_ms"])
        assert float(row["size_mb"]) > 0 and float(row["parameters_m"]) > 0
        print(f"{row['archive']}: {row['val_correct']}/{row['val_total']} correct, {row['requests_per_s']} req/s, "
              f"p50 {row['p50_ms']} ms, in-process "
              f"{ {k: v for k, v in row.items() if k.startswith('inprocess')} }")
    text = (out / "bench.md").read_text()
    assert all(f"| {name}" in text for name in names) and "batch 100" in text and "cores" in text
    assert "woof bench" in text and any(r["pareto"] == "1" for r in rows)
    return rows


def test_bench_quick_starts_registers_measures_and_stops(tiny_archives, tiny_model_dir, data_root, tmp_path,
                                                        capsys, monkeypatch):
    from training.export import image_batch, run_export

    monkeypatch.setenv("WOOF_THREADS", "1")
    out = tmp_path / "report"
    names = list(TINY_ARCHIVES)
    with torch_threads(1):
        code = main(["bench", "--quick", "--quiet", "--store", str(tiny_archives), "--models", ",".join(names),
                     "--data", str(data_root), "--out", str(out)])
    printed = capsys.readouterr()
    print(printed.out)
    assert code == 0, printed.err
    check_report(out, names)
    # it stopped the TorchServe it started
    pid = int(re.search(r"TorchServe is up: .*\(pid (\d+)\)", printed.out).group(1))
    assert not psutil.pid_exists(pid) or "ModelServer" not in " ".join(psutil.Process(pid).cmdline())
    # TorchServe's answers are the archived model's own top-1 on those images
    predictions = read_csv(out / "bench_predictions.csv")
    for name, fmt in TINY_ARCHIVES.items():
        mine = [p for p in predictions if p["archive"] == name]
        member = {"torchscript": "model.pt", "onnx": "model.onnx"}[fmt]
        with zipfile.ZipFile(tiny_archives / f"{name}.mar") as z:
            z.extract(member, tmp_path / name)
            card = json.loads(z.read("card.json"))
        paths = [data_root / p["image"] for p in mine]
        with torch_threads(1):
            breed, _ = run_export(tmp_path / name / member, fmt, image_batch(paths, card["preprocessing"]))
        wnids = [c["wnid"] for c in card["classes"]]
        assert [p["predicted"] for p in mine] == [wnids[i] for i in breed.argmax(1)]


def test_bench_on_a_running_torchserve_registers_only_what_it_lacks(torchserve, data_root, tmp_path, capsys):
    extra = torchserve.store / "tiny-extra.mar"
    shutil.copy(torchserve.store / "tiny-onnx.mar", extra)
    try:
        code = main(["bench", "--quick", "--url", torchserve.url, "--mgmt-url", torchserve.management,
                     "--key-file", str(torchserve.key_file), "--store", str(torchserve.store),
                     "--models", "tiny-onnx,tiny-extra", "--data", str(data_root),
                     "--limit-per-class", "1", "--requests", "24", "--concurrency", "4",
                     "--quiet", "--out", str(tmp_path)])
        printed = capsys.readouterr()
        print(printed.out)
        assert code == 0, printed.err
        assert "tiny-onnx: already served" in printed.out and "tiny-extra: registered" in printed.out
        rows = check_report(tmp_path, ["tiny-onnx", "tiny-extra"])
        assert [int(r["load_requests"]) for r in rows] == [24, 24]
        # what it registered is gone again; what was there is still served
        status, _ = torchserve.keys.urlopen("management", f"{torchserve.management}/models/tiny-extra", timeout=10)
        assert status == 404
        status, body = torchserve.keys.urlopen("management", f"{torchserve.management}/models/tiny-onnx", timeout=10)
        assert status == 200 and json.loads(body)[0]["workers"]
    finally:
        extra.unlink()


def test_bench_errors_are_readable(tiny_archives, data_root, tmp_path, capsys, monkeypatch):
    def bench(*extra):
        code = main(["bench", "--quick", "--data", str(data_root), "--out", str(tmp_path / "out"), *extra])
        return code, capsys.readouterr().err

    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = bench("--store", str(empty))
    assert code == 2 and "no archives to benchmark" in err and "woof archive --all" in err
    code, err = bench("--store", str(tiny_archives), "--models", "tiny,nope")
    assert code == 2 and "no archive nope.mar" in err
    code, err = bench("--store", str(tiny_archives), "--url", "http://127.0.0.1:9")
    assert code == 2 and "--mgmt-url" in err
    code, err = bench("--store", str(tiny_archives), "--models", "tiny", "--url", "http://127.0.0.1:9",
                      "--mgmt-url", "http://127.0.0.1:9")
    assert code == 2 and "no TorchServe answers" in err
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-java"))
    code, err = bench("--store", str(tiny_archives), "--models", "tiny")
    assert code == 2 and "Java" in err
    assert not (tmp_path / "out").exists()


def test_phone_size_jpegs(data_root):
    from PIL import Image

    from scripts.bench import phone_jpegs
    from training.export import pick_images

    (jpeg,) = phone_jpegs(pick_images(data_root, "val", 1))
    with Image.open(__import__("io").BytesIO(jpeg)) as img:
        assert img.format == "JPEG" and sorted(img.size) == [3000, 4000]


def test_pareto_front():
    points = [(10.0, 0.9), (20.0, 0.8), (5.0, 0.85), (20.0, 0.7), (30.0, 0.6), (10.0, 0.9)]
    # (5, .85) is beaten by (10, .9); (20, .7) by (20, .8); the two equal points both stay
    assert pareto_front(points) == [0, 5, 1, 4]
    assert pareto_front([(1.0, 1.0)]) == [0]
    assert list(np.asarray(pareto_front([]))) == []


def test_default_pick_is_the_fastest_within_half_a_point_of_the_best_lite0():
    from pathlib import Path

    from scripts.bench import Archive, default_pick

    def archive(name, arch):
        return Archive(name, Path(f"{name}.mar"), {"architecture": arch})

    archives = [archive("a", "efficientnet_lite0"), archive("b", "efficientnet_lite0"),
                archive("c", "efficientnet_lite0"), archive("big", "efficientnet_lite2")]
    rows = [{"archive": "a", "workload": "val", "val_top1": 0.9562, "requests_per_s": 80.0},
            {"archive": "b", "workload": "val", "val_top1": 0.9515, "requests_per_s": 150.0},  # 0.47 pt below
            {"archive": "c", "workload": "val", "val_top1": 0.9510, "requests_per_s": 300.0},  # 0.52 pt below
            {"archive": "big", "workload": "val", "val_top1": 0.9700, "requests_per_s": 900.0},  # not Lite0
            {"archive": "c", "workload": "phone 12 MP", "requests_per_s": 999.0}]  # not an accuracy row
    assert default_pick(rows, archives) == "b"
    assert default_pick(rows[:1], archives) == "a"
    assert default_pick(rows[3:4], archives) is None


def test_bench_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--help"])
    assert e.value.code == 0 and "--mgmt-url" in capsys.readouterr().out
