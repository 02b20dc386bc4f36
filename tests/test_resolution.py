"""The 320 px protocol's parts: official-copy verification, both-resolution eval with a paired test,
a fixed hold-out scored on a second copy, resolution augmentation, and cards versioned by code."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from training import checkpoint
from training.data import holdout_split, list_samples, same_files
from training.evaluate import mcnemar_exact
from training.recipe import TrainConfig
from training.train import train
from training.transforms import RandomDownscale
from training.verify import official_files, verify
from woof import card as cards
from woof.breeds import WNIDS
from woof.cli import main

from .test_datatools import make_subset


# ---------------------------------------------------------------- woof data verify --expect
def test_the_official_list_is_the_csv_of_the_real_set(data_root):
    listed = [line.split(",")[0] for line in (data_root / "noisy_imagewoof.csv").read_text().splitlines()[1:]]
    assert official_files() == sorted(listed) and len(listed) == 12954


def test_the_real_160_set_is_exactly_the_official_copy(data_root):
    report = verify(data_root, decode=False, workers=2, expect="160")
    assert report.ok and not (report.official_missing or report.official_extra or report.wrong_size)


def test_expect_names_missing_extra_and_wrong_size_files_and_fails(tmp_path, capsys):
    root = make_subset(tmp_path / "copy", per_class=2)
    small = next((root / "train" / WNIDS[0]).iterdir())
    with Image.open(small) as img:
        img.resize((img.width // 2, img.height // 2)).save(small)
    extra = root / "val" / WNIDS[1] / "not_official.JPEG"
    shutil.copyfile(next((root / "val" / WNIDS[1]).iterdir()), extra)
    rc = main(["data", "verify", "--data", str(root), "--expect", "160", "--quick", "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 2 and "failed verification" in err
    assert "12,914 file(s) of the official imagewoof2-160 missing" in err  # 12,954 - 40 on disk
    assert f"EXTRA val/{WNIDS[1]}/not_official.JPEG" in out
    assert f"WRONG SIZE {small} (shorter side 80 px)" in out
    # every side is 160: the 40 copied files and the extra one
    assert len(verify(root, decode=False, workers=1, expect="320").wrong_size) == 41
    # without --expect a legitimate subset only warns
    assert main(["data", "verify", "--data", str(root), "--quick", "--quiet"]) == 0


# ---------------------------------------------------------------- woof eval at two resolutions
def test_mcnemar_exact_matches_a_hand_computed_case():
    # 3 images only the model gets right, 0 only the other: p = 2 * (1/2)^3 = 0.25
    assert mcnemar_exact([1, 1, 1, 1, 0], [0, 0, 0, 1, 0]) == {
        "only_model_right": 3, "only_zero_shot_right": 0, "p_value": 0.25}
    # 1 vs 4 discordant: p = 2 * (C(5,0) + C(5,1)) / 32 = 0.375
    assert mcnemar_exact([1, 0, 0, 0, 0], [0, 1, 1, 1, 1])["p_value"] == 0.375
    assert mcnemar_exact([1, 0], [1, 0])["p_value"] == 1.0  # no discordant pair


def test_eval_on_two_copies_writes_both_and_a_user_folder_without_imagenet_val_works(
        tiny_model_dir, data_root, tmp_path, capsys):
    own = tmp_path / "own"  # a user's folder in the Imagewoof layout: no ILSVRC2012_val_* file
    for wnid in WNIDS:
        (own / "val" / wnid).mkdir(parents=True)
        for src in [p for p in sorted((data_root / "val" / wnid).iterdir()) if "ILSVRC" not in p.name][:2]:
            shutil.copyfile(src, own / "val" / wnid / src.name)
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    report = tmp_path / "report"
    rc = main(["eval", str(model_dir), "--data", str(own), "--also", str(data_root), "--baseline",
               "--report", str(report), "--limit-per-class", "2", "--workers", "0", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "ImageNet-val subset: n/a (no images)" in out
    first = json.loads((report / "metrics.json").read_text())
    second = json.loads((report / "imagewoof2-160" / "metrics.json").read_text())
    assert first["val_imagenet_val_subset"]["total"] == 0 and second["val_set"] == "imagewoof2-160"
    for m in (first, second):
        test = m["mcnemar_vs_zero_shot"]["val"]
        assert m["val"]["correct"] - m["zero_shot"]["val"]["correct"] == (
            test["only_model_right"] - test["only_zero_shot_right"])
    assert "exact McNemar" in (report / "report.md").read_text()


def test_card_metrics_keep_the_primary_on_top_and_the_other_sizes_beside(tiny_model_dir, data_root, tmp_path):
    from training.evaluate import card_metrics, evaluate_val
    from training.models import create_model

    small = tmp_path / "small"  # a second copy of val with every photo shrunk: a genuinely different set
    for wnid in WNIDS:
        (small / "val" / wnid).mkdir(parents=True)
        for src in sorted((data_root / "val" / wnid).iterdir())[:3]:
            with Image.open(src) as img:
                img.resize((img.width // 2, img.height // 2)).save(small / "val" / wnid / src.name)
    model, card = checkpoint.load_model(tiny_model_dir)
    zero_shot = create_model(card["architecture"], pretrained="imagenet")
    run = dict(limit_per_class=3, workers=0, progress=False)
    per_set = [evaluate_val(root, model, card["preprocessing"], zero_shot, **run)[0] for root in (data_root, small)]
    metrics = card_metrics(per_set)
    assert metrics["val_set"] == "imagewoof2-160" and metrics["val"]["total"] == 30
    assert set(metrics["per_class_f1"]) == {c["breed"] for c in card["classes"]}
    other = metrics["other_val_sets"]["imagewoof2 (shorter side 80)"]
    assert other["val"]["total"] == 30 and "p_value" in other["mcnemar_vs_zero_shot"]["val"]
    assert "per_class" not in other and "confusion" not in other


# ---------------------------------------------------------------- training
def test_downscale_shrinks_into_the_range_and_never_enlarges():
    shrink = RandomDownscale((100, 120))
    for _ in range(20):
        out = shrink(Image.new("RGB", (480, 320)))
        assert 100 <= min(out.size) <= 120 and out.size[0] / out.size[1] == pytest.approx(1.5, abs=0.02)
    assert shrink(Image.new("RGB", (90, 60))).size == (90, 60)


def test_the_hold_out_is_fixed_whatever_the_training_seed_and_scored_on_a_second_copy(tmp_path, data_root):
    train_a = holdout_split(list_samples(data_root, "train"), 0.1, 0)[1]
    assert len(train_a) == 902
    other = same_files(train_a, data_root)
    assert [s.path.name for s in other] == [s.path.name for s in train_a]
    config = TrainConfig(epochs=1, batch_size=10, limit_per_class=2, train_size=64, eval_size=96, workers=0,
                         holdout=0.1, holdout_seed=0, seed=7, holdout_also=str(data_root), low_res_p=1.0,
                         low_res_side=(40, 60))
    train(config, data_root, tmp_path / "run", progress=False)
    card = cards.read_card(tmp_path / "run")
    assert card["data"]["holdout_seed"] == 0 and card["data"]["dataset"] == "imagewoof2-160"
    header = (tmp_path / "run" / "history.csv").read_text().splitlines()[0]
    assert f"holdout_acc_{data_root.name}" in header


@pytest.mark.parametrize("values, message", [
    ({"holdout_also": "/nonexistent", "holdout": 0.1}, "is not a folder"),
    ({"holdout_also": "/tmp"}, "needs a hold-out"),
    ({"low_res_p": 1.5}, "low_res_p"),
    ({"low_res_side": [200, 100]}, "low_res_side"),
])
def test_bad_resolution_settings_are_refused(values, message):
    from woof.errors import WoofError

    with pytest.raises(WoofError, match=message):
        TrainConfig.from_dict(values)


def test_promote_and_retrain_give_the_next_version_and_keep_the_old_one(tiny_model_dir, tmp_path, capsys):
    target = tmp_path / "lite0"
    shutil.copytree(tiny_model_dir, target)
    card = cards.read_card(target)
    old_weights = "0" * 64  # the model it replaces had other weights
    card.update(version="1.3.0", weights_sha256=old_weights,
                metrics={"val": {"top1": 0.9, "correct": 9, "total": 10, "ci95": [0.6, 0.98]},
                         "val_imagenet_val_subset": {"top1": None, "correct": 0, "total": 0, "ci95": [0, 0]}})
    cards.write_card(target, card)
    (target / "report").mkdir()
    assert main(["promote", str(tiny_model_dir), "--to", str(target)]) == 0
    new = cards.read_card(target)
    assert new["version"] == "1.4.0" and new["name"] == card["name"] and new["metrics"] == {}
    assert new["previous_versions"][0]["version"] == "1.3.0"
    assert new["previous_versions"][0]["val"]["correct"] == 9
    assert not (target / "report").exists()
    assert (target / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()
    assert main(["promote", str(target), "--to", str(target)]) == 2
    assert main(["promote", str(tiny_model_dir), "--to", str(target)]) == 2  # twice: refused, still 1.4.0
    assert cards.read_card(target)["version"] == "1.4.0"
    assert cards.bump_minor("2.9.1") == "2.10.0"


def half_size_copy(samples, dest, resample=Image.Resampling.BICUBIC):
    """The same train files at half size under dest (a second copy of Imagewoof, as the 160 px set is)."""
    for s in samples:
        target = dest / "train" / s.wnid / s.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(s.path) as img:
            img.resize((img.width // 2, img.height // 2), resample).save(target, quality=95)
    return dest


def test_mixed_copies_read_the_same_photo_from_the_other_copy_with_probability_p(tmp_path, data_root):
    from training.data import ImageDataset
    from training.train import MixedCopies

    samples = list_samples(data_root, "train")[:20]
    small = half_size_copy(samples, tmp_path / "small")
    base = ImageDataset(samples, lambda img: min(img.size))
    other = same_files(samples, small)
    assert {MixedCopies(base, other, 1.0)[i][0] for i in range(20)} == {80}
    assert {MixedCopies(base, other, 0.0)[i][0] for i in range(20)} == {160}
    mixed = [MixedCopies(base, other, 0.5)[i] for i in range(20)]
    assert {size for size, _ in mixed} == {80, 160} and [label for _, label in mixed] == [s.label for s in samples]
    with pytest.raises(Exception, match="needs mix_data"):
        TrainConfig.from_dict({"mix_p": 0.5})


def test_paired_copies_give_the_teacher_the_same_crop_of_the_sharp_photo(tmp_path, data_root):
    import torch

    from training.train import PairedCopies

    samples = list_samples(data_root, "train")[:6]
    small = half_size_copy(samples, tmp_path / "small", Image.Resampling.LANCZOS)
    config = TrainConfig(train_size=64, crop_scale=(0.3, 0.6))
    spec = {"mean": [0.5] * 3, "std": [0.5] * 3}
    paired = PairedCopies(samples, same_files(samples, small), 1.0, config, spec)
    for i in range(len(samples)):
        student, teacher, label = paired[i]
        assert student.shape == teacher.shape == (3, 64, 64) and label == samples[i].label
        other = paired[(i + 1) % len(samples)][1]  # a crop of another photo
        same_gap = (student - teacher).abs().mean()
        assert same_gap < 0.1 and same_gap < (student - other).abs().mean() / 2
    student, teacher, _ = PairedCopies(samples, same_files(samples, small), 0.0, config, spec)[0]
    assert torch.equal(student, teacher)  # p = 0: both see the sharp crop


def test_a_zero_shot_teacher_is_the_untrained_model(tmp_path, data_root):
    from training.distill import _load_one_teacher
    from training.models import default_preprocessing
    from woof.errors import WoofError

    config = TrainConfig(teacher="zero-shot:efficientnet_lite0", teacher_runtime="pytorch")
    spec = default_preprocessing("efficientnet_lite0")
    import torch

    teacher = _load_one_teacher(config.teacher_dirs()[0], config, spec, torch.device("cpu"), torch.channels_last)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(teacher.logits(x), teacher.model.zero_shot(x), atol=1e-5)
    with pytest.raises(WoofError, match="unknown model"):
        TrainConfig(teacher="zero-shot:no_such_net").check()
    with pytest.raises(WoofError, match="teacher_view sharp needs"):
        TrainConfig(teacher_view="sharp").check()


def test_every_recipe_field_is_a_woof_train_flag(capsys):
    import dataclasses

    from training.commands import recipe_flags
    from woof.cli import build_parser

    flags = recipe_flags(TrainConfig)
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"extra"}
    assert {key for key, _ in flags.values()} == fields
    args = build_parser().parse_args(["train", "--out", "x", "--crop-scale", "0.3,0.9", "--no-freeze-bn",
                                      "--low-res-side", "100,150", "--teacher", "a,b", "--mix-p", "0.25"])
    assert (args.crop_scale, args.freeze_bn, args.low_res_side, args.teacher, args.mix_p) == (
        (0.3, 0.9), False, (100, 150), "a,b", 0.25)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--out", "x", "--help"])
    text = capsys.readouterr().out
    for flag in flags:
        assert flag in text
