"""Evaluation reports agree with the predictions; `woof predict` and the CLI behave for users."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest

from training.evaluate import wilson_interval
from woof.breeds import BREEDS, WNIDS
from woof.cli import main

from .conftest import ROOT, val_images


def test_eval_report_numbers_agree_with_its_predictions(tiny_model_dir, data_root, tmp_path, capsys):
    report = tmp_path / "report"
    code = main(["eval", str(tiny_model_dir), "--data", str(data_root), "--report", str(report),
                 "--limit-per-class", "20", "--workers", "0", "--quiet"])
    assert code == 0
    for name in ("metrics.json", "predictions.csv", "report.md", "confusion_matrix.png", "misclassified.png"):
        assert (report / name).stat().st_size > 0, name
    metrics = json.loads((report / "metrics.json").read_text())
    with (report / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == metrics["images"] == 200
    correct = sum(int(r["correct"]) for r in rows)
    assert metrics["val"]["correct"] == correct
    assert metrics["val"]["top1"] == pytest.approx(correct / 200, abs=1e-4)
    subset = [r for r in rows if "ILSVRC2012_val_" in r["file"]]
    assert metrics["val_imagenet_val_subset"]["total"] == len(subset) > 0
    assert metrics["val_imagenet_val_subset"]["correct"] == sum(int(r["correct"]) for r in subset)
    confusion = np.array(metrics["confusion"])
    assert confusion.sum() == 200 and np.trace(confusion) == correct
    for i, c in enumerate(metrics["per_class"]):
        assert c["wnid"] == WNIDS[i] and c["breed"] == BREEDS[WNIDS[i]] and c["support"] == 20
        assert c["recall"] == pytest.approx(confusion[i, i] / 20, abs=1e-4)
    lo, hi = metrics["val"]["ci95"]
    assert lo <= metrics["val"]["top1"] <= hi
    out = capsys.readouterr().out
    assert "full val" in out and "ImageNet-val subset" in out


def test_eval_update_card_refuses_a_partial_val_set(tiny_model_dir, data_root, tmp_path, capsys):
    card_before = (tiny_model_dir / "card.json").read_text()
    code = main(["eval", str(tiny_model_dir), "--data", str(data_root), "--report", str(tmp_path / "r"),
                 "--limit-per-class", "2", "--workers", "0", "--quiet", "--update-card"])
    assert code == 2 and "full val" in capsys.readouterr().err
    assert (tiny_model_dir / "card.json").read_text() == card_before


def test_wilson_interval_matches_a_known_value():
    lo, hi = wilson_interval(151, 162)  # 93.2 % of the 162-image subset
    assert lo == pytest.approx(0.882, abs=0.002) and hi == pytest.approx(0.962, abs=0.002)


def test_predict_json_gives_the_prediction_objects(tiny_model_dir, data_root, capsys):
    files = [str(p) for p, _ in val_images(data_root, 1)[:3]]
    assert main(["predict", *files, "--model-dir", str(tiny_model_dir), "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for line, f in zip(lines, files):
        result = json.loads(line)
        assert result["file"] == f and result["model"] == "tiny-lite0" and result["model_version"] == "1.0.0"
        assert len(result["top_k"]) == 3
        for p in result["top_k"]:
            assert set(p) == {"breed", "wnid", "probability"} and BREEDS[p["wnid"]] == p["breed"]
        assert sum(p["probability"] for p in result["top_k"]) <= 1.0001


def test_predict_reports_a_bad_file_and_still_answers_the_good_one(tiny_model_dir, data_root, tmp_path, capsys):
    bad = tmp_path / "notes.txt"
    bad.write_text("not a photo")
    good = str(val_images(data_root, 1)[0][0])
    assert main(["predict", str(bad), good, "--model-dir", str(tiny_model_dir)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}: error: not an image" in out
    assert out.count("%") == 3 and f"{good}:" in out


def test_predict_with_a_corrupt_weights_file_is_a_clear_error(tiny_model_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken, ignore=shutil.ignore_patterns("last.pt"))
    (broken / "model.safetensors").write_bytes(b"\x00" * 100)
    assert main(["predict", "x.jpg", "--model-dir", str(broken)]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_predict_with_a_missing_model_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["predict", "x.jpg", "--model-dir", str(tmp_path / "none")]) == 2
    assert "no model card" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["data"], ["train"], ["eval"], ["predict"], ["export"], ["wise"],
                                     ["calibrate"], ["archive"], ["serve"], ["bench"]])
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: woof" in capsys.readouterr().out


def test_missing_data_root_is_a_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("WOOF_DATA_ROOT", raising=False)
    assert main(["eval", "--zero-shot", "efficientnet_lite0", "--report", str(tmp_path)]) == 2
    assert "WOOF_DATA_ROOT" in capsys.readouterr().err


def test_unknown_model_on_the_command_line(capsys, data_root, tmp_path):
    code = main(["train", "--model", "resnet_9000", "--out", str(tmp_path / "r"), "--data", str(data_root),
                 "--pretrained", "none", "--head-init", "random", "--limit-per-class", "1"])
    assert code == 2 and "unknown model 'resnet_9000'" in capsys.readouterr().err


OPENSET = ROOT.parent / "shared" / "data" / "openset"


def test_predict_gives_the_three_open_set_answers(tiny_model_dir, data_root, tmp_path, capsys):
    """A cat is not a dog, a pug is a dog of another breed (named), a Samoyed is one of the 10; top_k stays."""
    import skimage.data
    from PIL import Image

    from woof.card import read_card, write_card

    model_dir = tmp_path / "with-open-set"
    shutil.copytree(tiny_model_dir, model_dir, ignore=shutil.ignore_patterns("last.pt"))
    card = read_card(model_dir)
    card["open_set"]["formats"]["fp32"].update(dog_threshold=0.2, share_threshold=0.3, other_dog_threshold=0.2)
    write_card(model_dir, card)
    cat = tmp_path / "chelsea.png"
    Image.fromarray(skimage.data.chelsea()).save(cat)
    pug = OPENSET / "otherdogs" / "pug" / "AlexanderYuryshev__dog-selector-tss__public_images_pug.jpg"
    samoyed = str(val_images(data_root, 1)[8][0])
    assert main(["predict", str(cat), str(pug), samoyed, "--model-dir", str(model_dir), "--json"]) == 0
    cat_r, pug_r, samoyed_r = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert cat_r["answer"] == "not_dog" and cat_r["other_breed"] is None and cat_r["is_known_breed"] is False
    assert cat_r["dog_probability"] < 0.2 and len(cat_r["top_k"]) == 3  # the ranking is still given
    assert pug_r["answer"] == "other_dog" and pug_r["is_known_breed"] is False
    assert pug_r["other_breed"]["name"] == "pug" and pug_r["other_breed"]["imagenet_class"] == 254
    assert samoyed_r["answer"] == "breed" and samoyed_r["is_known_breed"] is True and samoyed_r["other_breed"] is None
    assert samoyed_r["top_k"][0]["breed"] == "Samoyed"
    main(["predict", str(cat), str(pug), "--model-dir", str(model_dir)])
    out = capsys.readouterr().out
    assert "probably not a dog" in out and "looks like a pug" in out and "not one of the 10 breeds" in out


def test_predict_refuses_a_broken_open_set_section(tiny_model_dir, data_root, tmp_path, capsys):
    from woof.card import read_card, write_card

    model_dir = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, model_dir, ignore=shutil.ignore_patterns("last.pt"))
    dog = str(val_images(data_root, 1)[0][0])
    card = read_card(model_dir)
    card["open_set"]["formats"]["fp32"]["share_threshold"] = 1.5
    write_card(model_dir, card)
    assert main(["predict", dog, "--model-dir", str(model_dir)]) == 2
    assert "share_threshold must be a number in [0, 1], not 1.5" in capsys.readouterr().err
    del card["open_set"]["formats"]["fp32"]
    write_card(model_dir, card)
    assert main(["predict", dog, "--model-dir", str(model_dir)]) == 2
    assert "no open-set calibration for fp32" in capsys.readouterr().err


def test_the_readme_predict_sample_is_the_committed_model_s_real_output(capsys):
    """README's `woof predict` sample (text and --json) is what the committed default model prints now."""
    import re

    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("$ .venv/bin/woof predict training/examples/*.jpg"):]
    block = block[:block.index("```")]
    text_part, json_part = block.split("$ .venv/bin/woof predict training/examples/beagle.jpg --json\n")
    shown_text = [line for line in text_part.splitlines()[1:] if line.strip() != "..."]
    examples = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "training" / "examples").glob("*.jpg"))
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        assert main(["predict", *examples]) == 0
        actual_text = capsys.readouterr().out.splitlines()
        assert main(["predict", "training/examples/beagle.jpg", "--json"]) == 0
        actual = json.loads(capsys.readouterr().out)
    finally:
        os.chdir(cwd)
    assert shown_text == actual_text[:len(shown_text)]
    shown = json.loads(re.sub(r", \.\.\.\]", "]", json_part.strip()))  # the sample elides top_k after the first
    assert shown["top_k"] == actual["top_k"][:len(shown["top_k"])]
    assert {k: v for k, v in shown.items() if k != "top_k"} == {k: v for k, v in actual.items() if k != "top_k"}
