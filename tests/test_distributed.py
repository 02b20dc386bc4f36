"""torchrun + DistributedDataParallel on this machine's CPU (gloo on loopback): 2 processes on a tiny real subset,
for the supervised, joint (CE + distillation + Barlow Twins) and Barlow Twins objectives; kill and resume;
the global-batch Barlow Twins loss."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from .conftest import ROOT

TORCHRUN = Path(sys.executable).with_name("torchrun")
WOOF = Path(sys.executable).with_name("woof")
TINY = ["--limit-per-class", "2", "--train-size", "64", "--batch-size", "4", "--workers", "0", "--quiet"]


def torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(launch(*args), env=env(), capture_output=True, text=True, timeout=timeout)


def launch(*args: str) -> list[str]:
    return [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "--no-python", str(WOOF), *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def rows(folder: Path) -> list[dict]:
    with open(folder / "history.csv") as f:
        return list(csv.DictReader(f))


def test_two_processes_train_the_same_weights_and_rank_0_writes(data_root, tmp_path):
    from training.checkpoint import load_model

    out = tmp_path / "ddp"
    result = torchrun("train", "--out", str(out), "--data", str(data_root), "--epochs", "1", "--holdout", "0.1",
                      "--eval-size", "64", *TINY)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "parameters identical across 2 processes" in result.stdout
    assert result.stdout.count("saved ") == 1 and result.stdout.count("epoch 1:") == 1  # rank 0 alone reports
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["processes"] == 2 and card["training"]["global_batch"] == 8
    (row,) = rows(out)
    assert int(row["image_passes"]) == 16  # 18 photos, 2 ranks x 2 full batches of 4
    assert 0 <= float(row["holdout_acc"]) <= 1
    model, _ = load_model(out)  # what rank 0 wrote loads and evaluates
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 10)


@pytest.mark.parametrize("objective,flags", [
    ("distillation", ["--teacher", "zero-shot:efficientnet_lite0", "--teacher-runtime", "pytorch"]),
    ("joint", ["--barlow-weight", "0.5", "--projector", "32-32-16"]),
])
def test_distillation_and_joint_barlow_twins_ce_over_two_processes(data_root, tmp_path, objective, flags):
    """The other objectives of `woof train` under torchrun: CE + distillation, CE + Barlow Twins."""
    out = tmp_path / objective
    result = torchrun("train", "--out", str(out), "--data", str(data_root), "--epochs", "1", *flags, *TINY)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "parameters identical across 2 processes" in result.stdout
    assert result.stdout.count("saved ") == 1  # rank 0 alone writes
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["processes"] == 2
    (row,) = rows(out)
    if objective == "joint":
        assert float(row["bt_off_diag"]) > 0, row  # the Barlow Twins term over the global batch
    else:
        assert card["recipe"]["teacher"] == "zero-shot:efficientnet_lite0" and "distilling from" in result.stdout


def test_barlow_twins_over_two_processes_and_a_killed_run_resumes(data_root, tmp_path):
    out = tmp_path / "ddp-bt"
    process = subprocess.Popen(launch("pretrain", "--out", str(out), "--data", str(data_root), "--epochs", "2",
                                      "--projector", "32-32-16", *TINY),
                               env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 200
    while not (out / "last.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, process.stdout.read()[-3000:]
    os.killpg(process.pid, signal.SIGKILL)  # torchrun and both workers, after epoch 1's checkpoint
    process.wait(30)
    assert (out / "last.pt").exists() and not (out / "model.safetensors").exists(), process.stdout.read()[-3000:]
    result = torchrun("pretrain", "--out", str(out), "--data", str(data_root), "--resume", "--quiet")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "parameters identical across 2 processes" in result.stdout
    history = rows(out)
    assert [r["epoch"] for r in history] == ["1", "2"]
    assert all(float(r["bt_off_diag"]) > 0 and float(r["embedding_std"]) > 0 for r in history)
    assert json.loads((out / "card.json").read_text())["kind"] == "barlow_twins_pretrain"


def _global_loss_worker(rank: int, init: str, z_a: torch.Tensor, z_b: torch.Tensor, out: str) -> None:
    import torch.distributed as dist

    from training.barlow import BarlowTwins

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    half = len(z_a) // 2
    mine = slice(rank * half, (rank + 1) * half)
    z_a_mine = z_a[mine].clone().requires_grad_(True)
    loss, terms = BarlowTwins(4, [4]).global_loss(z_a_mine, z_b[mine])
    loss.backward()
    torch.save({"loss": loss.item(), "grad": z_a_mine.grad}, f"{out}.{rank}")
    dist.barrier()  # neither side tears gloo down while the other still talks (an abort otherwise, now and then)
    dist.destroy_process_group()


def test_the_global_batch_loss_of_two_processes_equals_one_process(tmp_path):
    from training.barlow import BarlowTwins

    g = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(16, 6, generator=g), torch.randn(16, 6, generator=g)
    whole = z_a.clone().requires_grad_(True)
    loss, _ = BarlowTwins(4, [4]).global_loss(whole, z_b)
    loss.backward()
    torch.multiprocessing.spawn(_global_loss_worker, args=(f"file://{tmp_path / 'init'}", z_a, z_b,
                                                           str(tmp_path / "r")), nprocs=2)
    parts = [torch.load(tmp_path / f"r.{rank}") for rank in (0, 1)]
    assert parts[0]["loss"] == pytest.approx(loss.item(), rel=1e-6) == parts[1]["loss"]
    # each process's rows get the gradient they have in the one-process loss, summed over the processes
    # (both compute the same global loss); DistributedDataParallel's averaging then gives the 1-process step
    torch.testing.assert_close(torch.cat([parts[0]["grad"], parts[1]["grad"]]) / 2, whole.grad, rtol=1e-5,
                               atol=1e-6)


def test_sync_bn_on_cpu_is_a_clear_error(data_root, tmp_path):
    from training.recipe import TrainConfig
    from training.train import train
    from woof.errors import WoofError

    config = TrainConfig(pretrained="none", head_init="random", freeze_bn=False, barlow_weight=1.0, ce_weight=0,
                         sync_bn=True, device="cpu", limit_per_class=2, train_size=64, batch_size=4, workers=0)
    with pytest.raises(WoofError, match="sync_bn needs CUDA"):
        train(config, data_root, tmp_path / "sync", progress=False)
    assert not (tmp_path / "sync").exists()
