"""The layout's rules (docs/architecture.md): import-linter's contracts in pyproject.toml hold, they catch a
break, and the light parts (shared core, `woof` itself, gateway, bot) start without the deep-learning stack
(the TorchServe handler runs inside TorchServe, which brings torch)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("woof", "training", "handlers", "gateway", "bot", "scripts")


def lint(root: Path) -> subprocess.CompletedProcess:
    # PYTHONPATH first: grimp must read this tree's packages, not the ones the editable install points at
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_import_contracts_hold():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.fixture
def tree_copy(tmp_path):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__", "checkpoints", "teachers", "static", "examples"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n\ndef _probe():\n    {line}  # noqa\n")


def test_contracts_catch_a_forbidden_import_even_inside_a_function(tree_copy):
    _append(tree_copy / "gateway" / "api.py", "from training.train import train")
    result = lint(tree_copy)
    assert result.returncode == 1
    assert "gateway.api -> training.train" in result.stdout


def test_contracts_catch_a_circle(tree_copy):
    _append(tree_copy / "training" / "data.py", "from training.train import train")
    result = lint(tree_copy)
    assert result.returncode == 1
    assert "No cycles are allowed in training" in result.stdout


def test_light_parts_start_without_torch():
    code = ("import sys\n"
            "import woof.card, woof.files, woof.processes, woof.preprocess, woof.breeds, woof.cli\n"
            "import gateway, bot.app, bot.handlers\n"
            "gateway.create_app()\n"
            "heavy = sorted(m for m in ('torch', 'timm', 'torchvision', 'onnxruntime') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WOOF_STATE_DIR": "/tmp/woof-layout-test-state"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_woof_lists_every_command():
    from woof.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    assert list(commands) == ["data", "train", "pretrain", "eval", "predict", "knn", "export", "wise", "promote",
                              "calibrate",
                              "archive", "serve", "bench", "bot"]
