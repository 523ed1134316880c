"""Tests of training.loop (and training.optim): exact resume, checkpoints, early stopping, metrics."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import training.loop as loop
from training.config import OptimizerConfig, SchedulerConfig, TrainConfig
from training.data import make_train_loader
from training.distributed import DistContext
from training.loop import fit, load_checkpoint, use_cpu_bf16
from training.optim import create_optimizer, create_scheduler


class _Noisy(Dataset):
    """Regression data whose samples depend on the epoch (like seeded augmentation)."""

    def __init__(self, n: int = 24) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 6, generator=g)
        self.y = self.x @ torch.randn(6, 1, generator=g)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.x)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i] + 0.01 * self.epoch, self.y[i]


def _model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))


def _config(**changes: object) -> TrainConfig:
    base = {
        "epochs": 4,
        "batch_size": 5,
        "optimizer": OptimizerConfig(name="adamw", lr=0.01),
        "scheduler": SchedulerConfig(name="cosine", warmup_epochs=1),
    }
    return TrainConfig(**(base | changes))  # type: ignore[arg-type]


def _run(out: Path, config: TrainConfig, *, resume: bool = False, stop_after: int | None = None, model=None):
    dataset = _Noisy()
    model = model or _model()
    loader = make_train_loader(dataset, DistContext(), config.batch_size, seed=7)

    def validate(net: nn.Module) -> dict[str, float]:
        return {"score": -float(nn.functional.mse_loss(net(dataset.x), dataset.y))}

    result = fit(model, loader, nn.MSELoss(), config, out, DistContext(), validate=validate, monitor="score",
                 resume=resume, stop_after=stop_after)  # fmt: skip
    return model, result


def test_resume_equals_a_straight_run(tmp_path: Path) -> None:
    config = _config()
    straight, straight_result = _run(tmp_path / "straight", config)
    _, first = _run(tmp_path / "resumed", config, stop_after=2)
    assert first.epochs_run == 2
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 2
    resumed, resumed_result = _run(tmp_path / "resumed", config, resume=True, model=_model())
    assert resumed_result == straight_result
    assert resumed_result.epochs_run == 4
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0)
    last_a = load_checkpoint(tmp_path / "straight" / "last.pt")
    last_b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    for key, value in last_a["model"].items():
        torch.testing.assert_close(last_b["model"][key], value, rtol=0, atol=0)
    with (tmp_path / "resumed" / "metrics.csv").open() as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]


def test_checkpoints_load_with_weights_only(tmp_path: Path) -> None:
    _run(tmp_path, _config(epochs=1))
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert set(last) >= {"model", "optimizer", "scheduler", "scaler", "epoch", "rng", "best_score"}
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["epoch"] == 1


def test_early_stopping_keeps_the_best_weights(tmp_path: Path) -> None:
    scores = iter([0.5, 0.9, 0.8, 0.7, 0.6, 0.5])
    dataset = _Noisy()
    model = _model()
    config = _config(epochs=6, patience=2)
    loader = make_train_loader(dataset, DistContext(), config.batch_size)
    result = fit(
        model, loader, nn.MSELoss(), config, tmp_path, DistContext(), validate=lambda _m: {"dice": next(scores)}
    )
    assert (result.best_epoch, result.best_score, result.epochs_run, result.stopped_early) == (2, 0.9, 4, True)
    best = load_checkpoint(tmp_path / "best.pt")
    for key, value in best["model"].items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_without_validation_the_last_weights_are_best(tmp_path: Path) -> None:
    dataset = _Noisy()
    model = _model()
    loader = make_train_loader(dataset, DistContext(), 5)
    result = fit(model, loader, nn.MSELoss(), _config(epochs=2), tmp_path, DistContext())
    assert result.best_epoch == 2 and result.epochs_run == 2
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 2


@pytest.mark.parametrize("name", ["cosine", "onecycle", "constant"])
def test_schedulers_step_per_batch(name: str) -> None:
    optimizer = create_optimizer(nn.Linear(2, 1).parameters(), OptimizerConfig(name="radam", lr=0.1))
    scheduler = create_scheduler(optimizer, SchedulerConfig(name=name, warmup_epochs=1), steps_per_epoch=4, epochs=3)
    lrs = []
    for _ in range(12):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert max(lrs) <= 0.1 + 1e-9
    if name != "constant":
        assert lrs[-1] < 0.01


def test_unknown_optimizer_and_scheduler_list_the_allowed_names() -> None:
    with pytest.raises(ValueError, match=r"allowed: \['adamw', 'radam'\]"):
        create_optimizer(nn.Linear(2, 1).parameters(), OptimizerConfig(name="sgd"))
    optimizer = create_optimizer(nn.Linear(2, 1).parameters(), OptimizerConfig())
    with pytest.raises(ValueError, match="cosine"):
        create_scheduler(optimizer, SchedulerConfig(name="step"), steps_per_epoch=1, epochs=1)


def test_keep_last_returns_the_last_epoch(tmp_path: Path) -> None:
    scores = iter([0.9, 0.5, 0.6])
    dataset = _Noisy()
    model = _model()
    loader = make_train_loader(dataset, DistContext(), 5)
    config = _config(epochs=3, keep="last")
    result = fit(
        model, loader, nn.MSELoss(), config, tmp_path, DistContext(), validate=lambda _m: {"dice": next(scores)}
    )
    assert (result.best_epoch, result.best_score, result.epochs_run) == (3, 0.6, 3)
    last = load_checkpoint(tmp_path / "last.pt")["model"]
    for key, value in last.items():
        torch.testing.assert_close(model.state_dict()[key], value)
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 3


@pytest.mark.parametrize("native", [True, False])
def test_cpu_bf16_only_where_the_cpu_has_native_bf16(
    native: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Emulated bf16 is ~8x slower than float32: without AMX / AVX512-BF16 the recipe's cpu_bf16 trains fp32."""
    monkeypatch.setattr(loop, "cpu_supports_bf16", lambda: native)
    loop._warn_no_bf16.cache_clear()
    cpu = torch.device("cpu")
    with caplog.at_level("WARNING", logger="training.loop"):
        assert use_cpu_bf16(TrainConfig(cpu_bf16=True), cpu) is native
        assert use_cpu_bf16(TrainConfig(cpu_bf16=True), cpu) is native
    warnings = [r for r in caplog.records if "no native bf16" in r.getMessage()]
    assert len(warnings) == (0 if native else 1)  # said once, not per epoch
    assert use_cpu_bf16(TrainConfig(cpu_bf16=False), cpu) is False
    assert use_cpu_bf16(TrainConfig(cpu_bf16=True), torch.device("meta")) is False
