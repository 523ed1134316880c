"""Tests for bench/bench_real.py's bootstrap interval of the gain over all-empty and its one-pair tie rule."""

from __future__ import annotations

import numpy as np
import pytest

from bench.bench_real import _area_only_lines, against_empty, dice_bounds, gain_interval, pair_weight


def test_gain_interval_brackets_the_mean_gain_and_narrows_with_more_images() -> None:
    rng = np.random.default_rng(0)
    labels = rng.random((400, 4)) < 0.15
    empty = (~labels).astype(float)
    cascade = np.where(labels, rng.uniform(0.3, 0.9, labels.shape), (rng.random(labels.shape) > 0.02).astype(float))
    gain = float((cascade - empty).mean())
    low, high = gain_interval(cascade, empty)
    assert low < gain < high
    small_low, small_high = gain_interval(cascade[:40], empty[:40])
    assert small_high - small_low > 2.0 * (high - low)  # ~sqrt(10) wider on a tenth of the images


def test_gain_interval_is_a_point_when_every_image_gains_the_same_and_is_seeded() -> None:
    empty = np.ones((10, 4))
    cascade = np.full((10, 4), 0.75)
    assert gain_interval(cascade, empty) == pytest.approx((-0.25, -0.25))
    rng = np.random.default_rng(1)
    a, b = rng.random((30, 4)), rng.random((30, 4))
    assert gain_interval(a, b, seed=3) == gain_interval(a, b, seed=3)
    assert gain_interval(a, b, seed=3) != gain_interval(a, b, seed=4)


@pytest.mark.parametrize(
    ("cascade", "empty", "level", "match"),
    [
        (np.zeros((3, 4)), np.zeros((3, 3)), 0.95, "same non-empty"),
        (np.zeros((0, 4)), np.zeros((0, 4)), 0.95, "same non-empty"),
        (np.zeros(4), np.zeros(4), 0.95, "same non-empty"),
        (np.zeros((3, 4)), np.zeros((3, 4)), 1.0, "level"),
    ],
)
def test_gain_interval_rejects_bad_input(cascade: np.ndarray, empty: np.ndarray, level: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        gain_interval(cascade, empty, level=level)


def test_one_pair_rule() -> None:
    assert pair_weight(37) == pytest.approx(1 / 148)
    assert against_empty(0.8446 + 0.9 / 148, 0.8446, 37) == "ties"
    assert against_empty(0.8446 + 1.1 / 148, 0.8446, 37) == "above"
    assert against_empty(0.8446 - 1.1 / 148, 0.8446, 37) == "below"


def test_dice_bounds_are_exact_when_an_area_is_zero_and_bracket_every_overlap_otherwise() -> None:
    pred = np.array([[0, 0, 30, 100]])
    true = np.array([[0, 50, 0, 300]])
    low, high = dice_bounds(pred, true)
    np.testing.assert_allclose(low, [[1.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(high, [[1.0, 0.0, 0.0, 2 * 100 / 400]])
    # every placement of a 100-pixel prediction against a 300-pixel truth on a line lands within the bounds
    truth = np.zeros(1000, bool)
    truth[200:500] = True
    for start in range(0, 900, 25):
        guess = np.zeros(1000, bool)
        guess[start : start + 100] = True
        dice = 2 * (guess & truth).sum() / (guess.sum() + truth.sum())
        assert low[0, 3] <= dice <= high[0, 3] + 1e-12


@pytest.mark.parametrize(
    ("pred", "true", "match"), [(np.zeros((2, 4)), np.zeros((2, 3)), "shape"), (-np.ones(4), np.ones(4), ">= 0")]
)
def test_dice_bounds_rejects_bad_input(pred: np.ndarray, true: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dice_bounds(pred, true)


def test_area_only_lines_count_marked_and_wrongly_opened_pairs_and_combine_with_exact_images() -> None:
    true = np.array([[0, 0, 500, 0], [0, 40, 0, 0]])
    cascade = np.array([[0, 0, 700, 0], [0, 0, 90, 0]])
    scores = {"images": ["a.jpg", "b.jpg"], "true_area": true, "cascade_area": cascade}
    for arm, pred in (("cascade", cascade), ("segment_all", cascade), ("empty", np.zeros_like(true))):
        scores[f"{arm}_low"], scores[f"{arm}_high"] = dice_bounds(pred, true)
    exact = np.ones((3, 4))  # three images with complete masks, every pair right
    lines = "\n".join(_area_only_lines(scores, "| | mean | 1 | 2 | 3 | 4 |", exact, np.ones((3, 4))))
    assert "marks 1 of the 2 defect pairs (class 2 0 of 1, class 3 1 of 1)" in lines
    assert "wrongly opens 1 of the 6 empty pairs" in lines
    high = 2 * 500 / 1200
    assert f"**{5 / 8:.4f}-{(5 + high) / 8:.4f}**" in lines  # cascade: 5 exact pairs right, one bounded
    assert f"all-empty {(12 + 6) / 20:.4f}" in lines
    assert f"cascade {(12 + 5) / 20:.4f}-{(12 + 5 + high) / 20:.4f}" in lines
