"""Losses for the multi-label classifier and the binary segmenters, built by name.

Every loss is called as ``loss(logits, target)`` with ``target`` a float tensor of the logits' shape
(``(N, 4)`` classifier logits or ``(N, 1, H, W)`` segmenter logits) and returns a scalar.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["LOSS_NAMES", "BceDiceLoss", "create_loss"]


class _BinaryLoss(nn.Module):
    """Adapter giving smp's binary losses the ``loss(logits, float target)`` contract."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss of ``logits`` against ``target`` (same shape, values in [0, 1])."""
        if logits.shape != target.shape:
            raise ValueError(f"target shape {tuple(target.shape)} differs from logits shape {tuple(logits.shape)}")
        return self.loss(logits, target.to(logits.dtype))


def _bce(pos_weight: float | None = None, **kwargs: Any) -> nn.Module:
    weight = None if pos_weight is None else torch.tensor(float(pos_weight))
    return _BinaryLoss(nn.BCEWithLogitsLoss(pos_weight=weight, **kwargs))


def _dice(**kwargs: Any) -> nn.Module:
    from segmentation_models_pytorch.losses import DiceLoss

    return _BinaryLoss(DiceLoss(mode="binary", from_logits=True, **kwargs))


def _lovasz(**kwargs: Any) -> nn.Module:
    from segmentation_models_pytorch.losses import LovaszLoss

    return _BinaryLoss(LovaszLoss(mode="binary", from_logits=True, **kwargs))


def _focal(**kwargs: Any) -> nn.Module:
    from segmentation_models_pytorch.losses import FocalLoss

    return _BinaryLoss(FocalLoss(mode="binary", **kwargs))


class BceDiceLoss(nn.Module):
    """Weighted sum ``bce_weight * BCE + dice_weight * Dice`` on logits.

    Args:
        bce_weight: weight of the binary cross-entropy term.
        dice_weight: weight of the soft Dice term.
        pos_weight: optional BCE weight of positive pixels.
        smooth: Dice smoothing constant.
    """

    def __init__(
        self, bce_weight: float = 0.5, dice_weight: float = 0.5, pos_weight: float | None = None, smooth: float = 0.0
    ) -> None:
        super().__init__()
        for name, value in (("bce_weight", bce_weight), ("dice_weight", dice_weight)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.bce_weight = float(bce_weight)
        self.dice_weight = float(dice_weight)
        self.bce = _bce(pos_weight=pos_weight)
        self.dice = _dice(smooth=smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss of ``logits`` against ``target`` (same shape, values in [0, 1])."""
        return self.bce_weight * self.bce(logits, target) + self.dice_weight * self.dice(logits, target)


_LOSSES: dict[str, Callable[..., nn.Module]] = {
    "bce": _bce,
    "dice": _dice,
    "bce_dice": BceDiceLoss,
    "lovasz": _lovasz,
    "focal": _focal,
}

LOSS_NAMES: tuple[str, ...] = tuple(_LOSSES)
"""Names accepted by ``create_loss``."""


def create_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build a loss by name.

    Args:
        name: one of ``LOSS_NAMES``: ``bce``, ``dice`` (soft Dice), ``bce_dice`` (weighted sum,
            ``bce_weight``/``dice_weight``), ``lovasz`` (binary Lovasz hinge), ``focal`` (``alpha``, ``gamma``).
        **kwargs: options of that loss.

    Raises:
        ValueError: unknown name or option.
    """
    try:
        factory = _LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; valid losses are {list(LOSS_NAMES)}") from None
    try:
        return factory(**kwargs)
    except TypeError as err:
        raise ValueError(f"bad options {sorted(kwargs)} for loss {name!r}: {err}") from err
