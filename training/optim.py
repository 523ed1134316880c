"""Optimizer and learning-rate schedule factories (plain functions over names)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from training.config import OptimizerConfig, SchedulerConfig

__all__ = ["OPTIMIZERS", "SCHEDULERS", "create_optimizer", "create_scheduler"]

logger = logging.getLogger(__name__)

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW,
    "radam": torch.optim.RAdam,
}
"""Optimizer names accepted by :func:`create_optimizer`."""

SCHEDULERS: tuple[str, ...] = ("cosine", "onecycle", "constant")
"""Schedule names accepted by :func:`create_scheduler`."""


def create_optimizer(params: Iterable[nn.Parameter], config: OptimizerConfig) -> torch.optim.Optimizer:
    """Build the optimizer named in ``config`` (``adamw`` or ``radam``; RAdam uses decoupled weight decay).

    Raises:
        ValueError: unknown optimizer name.
    """
    if config.name not in OPTIMIZERS:
        raise ValueError(f"optimizer {config.name!r} is not known; allowed: {sorted(OPTIMIZERS)}")
    kwargs: dict = {"lr": config.lr, "weight_decay": config.weight_decay}
    if config.name == "radam":
        kwargs["decoupled_weight_decay"] = True
    return OPTIMIZERS[config.name](params, **kwargs)


def _cosine_lambda(total: int, warmup: int, min_ratio: float) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def create_scheduler(
    optimizer: torch.optim.Optimizer, config: SchedulerConfig, *, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Build a per-batch learning-rate schedule.

    Args:
        optimizer: the optimizer (its ``lr`` is the peak rate).
        config: ``cosine`` (linear warm-up for ``warmup_epochs`` then cosine to ``min_lr_ratio``), ``onecycle``
            or ``constant``.
        steps_per_epoch: optimizer steps per epoch.
        epochs: number of epochs the schedule spans.

    Raises:
        ValueError: unknown schedule name.
    """
    total = max(1, steps_per_epoch * epochs)
    if config.name == "cosine":
        warmup = round(config.warmup_epochs * steps_per_epoch)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine_lambda(total, warmup, config.min_lr_ratio))
    if config.name == "onecycle" and total < 4:  # OneCycleLR divides by zero with fewer steps than its phases
        logger.warning("onecycle over %d step(s) is undefined; using a constant learning rate", total)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)
    if config.name == "onecycle":
        peak = [group["lr"] for group in optimizer.param_groups]
        pct = config.warmup_epochs / epochs if config.warmup_epochs > 0 else 0.3
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=peak, total_steps=total, pct_start=min(max(pct, 0.01), 0.99)
        )
    if config.name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)
    raise ValueError(f"scheduler {config.name!r} is not known; allowed: {list(SCHEDULERS)}")
