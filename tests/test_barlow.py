"""Barlow Twins: the loss on known inputs, the projector, the two-view objective in the one training loop
(pretraining, joint training), resume of a killed pretraining run, --init, kNN, and the recipe's errors."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from training.barlow import BarlowTwins, correlation_terms, knn_top1, parse_widths, projector
from training.recipe import PretrainConfig, TrainConfig
from woof.cli import main
from woof.errors import WoofError

from .conftest import ROOT

TINY = ["--limit-per-class", "2", "--train-size", "64", "--batch-size", "8", "--projector", "64-64-32",
        "--workers", "0"]


def lightly_loss(z_a, z_b, lambda_=0.0051):
    from lightly.loss import BarlowTwinsLoss

    return BarlowTwinsLoss(lambda_param=lambda_)(z_a, z_b)


def test_identical_decorrelated_views_cost_nothing():
    # columns that are exactly uncorrelated with mean 0: C = I after batch normalisation
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert lightly_loss(z, z).item() == pytest.approx(0.0, abs=1e-6)
    terms = correlation_terms(z, z)
    assert terms["bt_on_diag"] == pytest.approx(0.0, abs=1e-6) and terms["bt_off_diag"] == pytest.approx(0.0)


def test_a_small_case_by_hand_and_the_lambda_scaling():
    # view b is view a with its two units swapped: C = [[0, 1], [1, 0]] ->
    # on the diagonal (1 - 0)^2 + (1 - 0)^2 = 2, off it 1^2 + 1^2 = 2, so the loss is 2 + 2 lambda
    z_a = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    z_b = z_a[:, [1, 0]]
    terms = correlation_terms(z_a, z_b)
    assert terms["bt_on_diag"] == pytest.approx(2.0, abs=1e-5) and terms["bt_off_diag"] == pytest.approx(2.0, abs=1e-5)
    for lambda_ in (0.0051, 0.5):
        assert lightly_loss(z_a, z_b, lambda_).item() == pytest.approx(2.0 + lambda_ * 2.0, abs=1e-4)  # BatchNorm eps
    # our log terms are lightly's loss split in two, on random embeddings too
    g = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(32, 16, generator=g), torch.randn(32, 16, generator=g)
    terms = correlation_terms(z_a, z_b)
    assert lightly_loss(z_a, z_b, 0.1).item() == pytest.approx(terms["bt_on_diag"] + 0.1 * terms["bt_off_diag"],
                                                                rel=1e-4)


def test_gradients_reach_both_branches_and_the_projector():
    bt = BarlowTwins(12, [16, 16, 8])
    f_a, f_b = torch.randn(10, 12, requires_grad=True), torch.randn(10, 12, requires_grad=True)
    loss, terms = bt(f_a, f_b)
    loss.backward()
    assert f_a.grad.abs().sum() > 0 and f_b.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in bt.projector.parameters())
    assert set(terms) == {"bt_on_diag", "bt_off_diag", "embedding_std"}
    with pytest.raises(WoofError, match="at least 2 images per batch"):
        bt(f_a[:1], f_b[:1])


def test_projector_shapes_and_width_typos():
    assert parse_widths("2048-2048-2048") == [2048, 2048, 2048]
    head = projector(1280, [64, 64, 32])
    assert head(torch.randn(4, 1280)).shape == (4, 32)
    linear = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(1280, 64), (64, 64), (64, 32)]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules()) == 2  # none after the last layer
    for typo in ("2048-20x48", "2048--2048", "1", ""):
        with pytest.raises(WoofError, match="projector"):
            parse_widths(typo)


def test_knn_on_a_toy_set_with_a_known_answer():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 1, 1])
    queries = torch.tensor([[0.8, 0.2], [0.2, 0.8], [1.0, 0.05]])
    assert knn_top1(bank, labels, queries, torch.tensor([0, 1, 0]), k=2, num_classes=2) == 1.0
    assert knn_top1(bank, labels, queries, torch.tensor([1, 0, 0]), k=2, num_classes=2) == pytest.approx(1 / 3)


def test_recipe_errors_are_one_line(data_root, tmp_path):
    with pytest.raises(WoofError, match="pretraining reads train images only, never val"):
        PretrainConfig.from_dict({"split": "val"})
    with pytest.raises(WoofError, match="keep the selection hold-out out"):
        PretrainConfig.from_dict({"holdout": 0})
    with pytest.raises(WoofError, match="projector"):
        PretrainConfig.from_dict({"projector": "2048-2O48"})
    with pytest.raises(WoofError, match="batch_size >= 2"):
        PretrainConfig.from_dict({"batch_size": 1})
    with pytest.raises(WoofError, match="no teacher, mix_data or low_res_p"):
        TrainConfig.from_dict({"barlow_weight": 1.0, "teacher": "zero-shot:efficientnet_lite0"})
    with pytest.raises(WoofError, match="freeze_bn keeps ImageNet's BatchNorm statistics: it needs"):
        PretrainConfig.from_dict({"freeze_bn": True})
    with pytest.raises(WoofError, match="not a woof pretrain folder"):
        TrainConfig.from_dict({"init": "/nonexistent", "pretrained": "none", "head_init": "random"})
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "card.json").write_text("{not json")
    with pytest.raises(WoofError, match="not a readable model card"):
        TrainConfig.from_dict({"init": str(broken), "pretrained": "none", "head_init": "random"})
    with pytest.raises(WoofError, match="barlow_views must be byol or train"):
        TrainConfig.from_dict({"barlow_weight": 1.0, "barlow_views": "mild"})
    assert PretrainConfig().to_train_config().ce_weight == 0 and not PretrainConfig().to_train_config().freeze_bn


def test_label_fraction_keeps_a_fixed_stratified_share_and_the_whole_holdout(data_root):
    from collections import Counter

    from training.train import training_samples

    every, held = training_samples(TrainConfig.from_dict({"holdout": 0.1}), data_root)[:2]
    config = TrainConfig.from_dict({"holdout": 0.1, "label_fraction": 0.1, "seed": 7})
    labelled, held_scarce = training_samples(config, data_root)[:2]
    assert held_scarce == held  # the selection hold-out does not shrink with the labels
    assert set(s.path for s in labelled) <= set(s.path for s in every)
    per_class, everywhere = Counter(s.label for s in labelled), Counter(s.label for s in every)
    assert all(per_class[c] == round(everywhere[c] * 0.1) for c in everywhere)  # 10 % of each breed
    again = training_samples(TrainConfig.from_dict({"holdout": 0.1, "label_fraction": 0.1, "seed": 0}), data_root)[0]
    assert [s.path for s in again] == [s.path for s in labelled]  # the same photos whatever the training seed
    with pytest.raises(WoofError, match="label_fraction must be in"):
        TrainConfig.from_dict({"label_fraction": 0})
    with pytest.raises(WoofError, match="no unlabelled batches"):
        TrainConfig.from_dict({"label_fraction": 0.1, "barlow_weight": 1.0})


@pytest.mark.parametrize("views", ["byol", "train"])
def test_two_views_of_each_photo_are_two_different_crops(data_root, views):
    from training.data import list_samples
    from training.models import default_preprocessing
    from training.train import training_set

    config = TrainConfig.from_dict({"barlow_weight": 1.0, "barlow_views": views, "train_size": 64,
                                    "crop_scale": [0.2, 1.0], "pretrained": "none", "head_init": "random"})
    samples = list_samples(data_root, "train")[:3]
    dataset = training_set(config, samples, default_preprocessing(config.model, 64))
    torch.manual_seed(0)
    for i, sample in enumerate(samples):
        a, b, label = dataset[i]
        assert a.shape == b.shape == (3, 64, 64) and label == sample.label
        assert not torch.equal(a, b)  # independent draws, not one crop twice
    # train: the recipe's own crop-and-flip pipeline; byol: lightly's first asymmetric view
    assert type(dataset.view_a).__name__ == ("Compose" if views == "train" else "BYOLView1Transform")


def history(folder) -> list[dict]:
    with open(folder / "history.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def pretrained_folder(tmp_path_factory, data_root):
    """Two epochs of Barlow Twins from random init on 2 photos per class, killed after the first, resumed."""
    out = tmp_path_factory.mktemp("bt") / "bt-lite0"
    cmd = [sys.executable, "-m", "woof.cli", "pretrain", "--out", str(out), "--data", str(data_root),
           "--epochs", "2", "--quiet", *TINY]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not (out / "last.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)  # killed mid-run, after epoch 1's checkpoint
    process.wait(30)
    assert (out / "last.pt").exists() and not (out / "model.safetensors").exists(), process.stdout.read()
    assert len(history(out)) == 1
    assert main(["pretrain", "--out", str(out), "--data", str(data_root), "--resume", "--quiet"]) == 0
    return out


def test_pretraining_logs_the_collapse_monitor_and_resumes_after_a_kill(pretrained_folder):
    rows = history(pretrained_folder)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for r in rows:
        assert float(r["bt_on_diag"]) >= 0 and float(r["bt_off_diag"]) >= 0 and float(r["embedding_std"]) > 0
        assert r["train_acc"] == "" and r["holdout_acc"] == ""  # no labels were used
        assert int(r["image_passes"]) == 2 * 16  # 20 photos minus 2 held out -> 2 batches of 8, two views each
    card = json.loads((pretrained_folder / "card.json").read_text())
    assert card["kind"] == "barlow_twins_pretrain" and card["training"]["image_passes"] == 64
    assert card["recipe"]["ce_weight"] == 0 and card["recipe"]["extra"]["pretrain"]["split"] == "train"
    assert card["data"]["holdout_images"] > 0  # the hold-out stayed out


def test_init_from_a_pretrain_folder_and_its_errors(pretrained_folder, data_root, tmp_path, capsys):
    from safetensors.torch import load_file

    from training.models import default_preprocessing
    from training.train import build_model

    config = TrainConfig.from_dict({"init": str(pretrained_folder), "pretrained": "none", "head_init": "random",
                                    "freeze_bn": False})
    model = build_model(config, default_preprocessing(config.model), resuming=False)
    saved = load_file(str(pretrained_folder / "model.safetensors"))
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, saved[f"backbone.{key}"]), key
    out = tmp_path / "from-bt"
    assert main(["train", "--out", str(out), "--data", str(data_root), "--init", str(pretrained_folder),
                 "--pretrained", "none", "--head-init", "random", "--no-freeze-bn", "--epochs", "1", "--quiet",
                 "--limit-per-class", "2", "--train-size", "64", "--batch-size", "8", "--workers", "0"]) == 0
    assert json.loads((out / "card.json").read_text())["recipe"]["init"] == str(pretrained_folder)
    code = main(["train", "--out", str(tmp_path / "wrong"), "--data", str(data_root), "--init", str(pretrained_folder),
                 "--model", "efficientnet_lite1", "--pretrained", "none", "--head-init", "random", "--epochs", "1"])
    assert code == 2 and "holds a efficientnet_lite0 backbone, not efficientnet_lite1" in capsys.readouterr().err
    assert not (tmp_path / "wrong" / "card.json").exists()
    # a random-init backbone under ImageNet's heads would read them through features they were never fitted to
    code = main(["train", "--out", str(tmp_path / "wrong"), "--data", str(data_root), "--init", str(pretrained_folder),
                 "--pretrained", "imagenet", "--head-init", "imagenet", "--epochs", "1"])
    assert code == 2 and "was pretrained from random init" in capsys.readouterr().err
    assert not (tmp_path / "wrong").exists() or not any((tmp_path / "wrong").iterdir())


def test_continued_pretraining_from_imagenet_keeps_its_batchnorm_and_heads(data_root, tmp_path):
    """woof pretrain --pretrained imagenet --freeze-bn, then a fine-tune that keeps the ImageNet heads."""
    from safetensors.torch import load_file

    from training.models import create_model

    out = tmp_path / "bt-imagenet"
    assert main(["pretrain", "--out", str(out), "--data", str(data_root), "--pretrained", "imagenet", "--freeze-bn",
                 "--epochs", "1", "--lr", "1e-3", "--optimizer", "adamw", "--quiet", *TINY]) == 0
    imagenet = create_model("efficientnet_lite0", pretrained="imagenet").state_dict()
    saved = load_file(str(out / "model.safetensors"))
    stats = [k for k in imagenet if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(saved[k], imagenet[k]) for k in stats)  # ImageNet's statistics kept
    assert not torch.equal(saved["backbone.conv_stem.weight"], imagenet["backbone.conv_stem.weight"])  # it learned
    assert torch.equal(saved["imagenet_head.weight"], imagenet["imagenet_head.weight"])  # the frozen head rides along
    card = json.loads((out / "card.json").read_text())
    assert card["recipe"]["pretrained"] == "imagenet" and card["recipe"]["freeze_bn"] is True

    tuned = tmp_path / "bt-imagenet-ft"
    assert main(["train", "--out", str(tuned), "--data", str(data_root), "--init", str(out), "--pretrained",
                 "imagenet", "--head-init", "imagenet", "--epochs", "1", "--quiet", "--limit-per-class", "2",
                 "--train-size", "64", "--batch-size", "8", "--workers", "0"]) == 0
    card = json.loads((tuned / "card.json").read_text())
    assert card["has_imagenet_head"] and card["recipe"]["init"] == str(out)


def test_joint_barlow_twins_and_cross_entropy_in_one_loop(data_root, tmp_path):
    out = tmp_path / "joint"
    assert main(["train", "--out", str(out), "--data", str(data_root), "--pretrained", "none", "--head-init",
                 "random", "--no-freeze-bn", "--barlow-weight", "0.5", "--epochs", "1", "--holdout", "0.1",
                 "--quiet", *TINY]) == 0
    (row,) = history(out)
    assert float(row["train_acc"]) >= 0 and float(row["bt_off_diag"]) > 0 and row["holdout_acc"] != ""
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["objective"] == "cross-entropy + Barlow Twins" and "kind" not in card


def test_knn_command_on_a_backbone_and_on_random_init(pretrained_folder, data_root, tmp_path, capsys):
    assert main(["knn", str(pretrained_folder), "--data", str(data_root), "--limit-per-class", "3", "--size", "64",
                 "--quiet"]) == 0
    result = json.loads((pretrained_folder / "knn.json").read_text())
    assert 0 <= result["top1"] <= 1 and result["k"] == 200 and result["input_size"] == 64
    assert "kNN top-1" in capsys.readouterr().out
    floor = []
    for run in ("a", "b"):  # the random floor is seeded: two runs give the same figure
        assert main(["knn", "--random", "efficientnet_lite0", "--data", str(data_root), "--limit-per-class", "2",
                     "--size", "64", "--out", str(tmp_path / run), "--quiet"]) == 0
        floor.append(json.loads((tmp_path / run / "knn.json").read_text()))
    assert floor[0] == floor[1] and floor[0]["model"] == "random efficientnet_lite0 (seed 0)"
    assert main(["knn", "--data", str(data_root)]) == 2
