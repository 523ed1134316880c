"""Tests for models/losses.py."""

from __future__ import annotations

import pytest
import torch

from models import LOSS_NAMES, create_loss
from models.losses import BceDiceLoss


def _target(shape: tuple[int, ...] = (2, 1, 16, 16)) -> torch.Tensor:
    target = torch.zeros(shape)
    target[..., 4:10, 3:12] = 1.0
    return target


def _logits_towards(target: torch.Tensor, confidence: float) -> torch.Tensor:
    """Logits that agree with ``target`` more as ``confidence`` grows (0 = uninformative)."""
    return (target * 2 - 1) * confidence


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_loss_is_finite_scalar_and_decreases_toward_perfect(name: str) -> None:
    loss = create_loss(name)
    target = _target()
    values = [loss(_logits_towards(target, c), target).item() for c in (-2.0, 0.0, 2.0, 8.0)]
    assert all(torch.isfinite(torch.tensor(values)))
    assert values == sorted(values, reverse=True), values
    assert values[0] > values[-1]


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_loss_gradient_flows(name: str) -> None:
    logits = torch.zeros(2, 1, 8, 8, requires_grad=True)
    target = _target((2, 1, 8, 8))
    create_loss(name)(logits, target).backward()
    assert logits.grad is not None
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_loss_accepts_classifier_logits(name: str) -> None:
    target = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    value = create_loss(name)(torch.randn(2, 4), target)
    assert value.ndim == 0
    assert torch.isfinite(value)


def test_dice_is_zero_for_perfect_prediction() -> None:
    target = _target()
    assert create_loss("dice")(_logits_towards(target, 30.0), target).item() == pytest.approx(0.0, abs=1e-5)
    assert create_loss("dice")(_logits_towards(target, -30.0), target).item() == pytest.approx(1.0, abs=1e-5)


def test_bce_dice_is_weighted_sum() -> None:
    target = _target()
    logits = torch.randn_like(target)
    bce = create_loss("bce")(logits, target)
    dice = create_loss("dice")(logits, target)
    combined = create_loss("bce_dice", bce_weight=0.3, dice_weight=2.0)(logits, target)
    torch.testing.assert_close(combined, 0.3 * bce + 2.0 * dice)
    assert isinstance(create_loss("bce_dice"), BceDiceLoss)


def test_bce_pos_weight_raises_positive_errors() -> None:
    target = _target()
    logits = torch.zeros_like(target)
    assert create_loss("bce", pos_weight=3.0)(logits, target) > create_loss("bce")(logits, target)


def test_focal_gamma_downweights_easy_pixels() -> None:
    target = _target()
    logits = _logits_towards(target, 2.0)
    assert create_loss("focal", gamma=2.0)(logits, target) < create_loss("focal", gamma=0.0)(logits, target)


def test_unknown_loss_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown loss 'dices'.*'bce'.*'bce_dice'.*'lovasz'.*'focal'"):
        create_loss("dices")


def test_bad_option_names_loss() -> None:
    with pytest.raises(ValueError, match=r"bad options \['bogus'\] for loss 'lovasz'"):
        create_loss("lovasz", bogus=1)
    with pytest.raises(ValueError, match="bce_weight must be >= 0"):
        create_loss("bce_dice", bce_weight=-1.0)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"target shape \(2, 1, 8, 8\) differs from logits shape \(2, 1, 16, 16\)"):
        create_loss("dice")(torch.zeros(2, 1, 16, 16), torch.zeros(2, 1, 8, 8))
