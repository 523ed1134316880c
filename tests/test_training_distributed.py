"""Tests of training.distributed: helpers in one process, and a real 2-process torchrun (gloo on CPU)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.fixtures.training import tiny_recipe, write_recipe
from training.distributed import (
    DistContext,
    all_gather_objects,
    barrier,
    broadcast_object,
    init_distributed,
    resolve_device,
)

ROOT = Path(__file__).resolve().parents[1]


def test_single_process_context(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed("cpu")
    assert ctx == DistContext(0, 0, 1, torch.device("cpu"))
    assert ctx.is_main and not ctx.distributed
    barrier()
    assert all_gather_objects({"a": 1}) == [{"a": 1}]
    assert broadcast_object([3]) == [3]


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"allowed: \['auto', 'cpu', 'cuda'\]"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_torchrun_two_processes_train_the_classifier_stage(synth_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    recipe = tiny_recipe(synth_dir, run_dir, **{"classifier.final": "fold", "classifier.train.epochs": 2})
    config = write_recipe(tmp_path / "recipe.yaml", recipe)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "cascade.cli.main", "train", "--config", str(config), "--stage", "classifier",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "initialised gloo process group: rank 1 of 2" in done.stderr
    for fold in (0, 1):
        folder = run_dir / "classifier" / f"fold{fold}"
        assert {p.name for p in folder.glob("*.pt")} == {"last.pt", "best.pt", "classifier.pt"}
        state = torch.load(folder / "last.pt", weights_only=True)
        assert state["epoch"] == 2
        with (folder / "metrics.csv").open() as f:
            assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]  # rank 0 alone writes
    with (run_dir / "classifier" / "oof.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24  # predictions gathered from both ranks
    assert (run_dir / "classifier" / "final" / "classifier.pt").is_file()
