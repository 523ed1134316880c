"""Tests for bench/bench_real.py's bootstrap interval of the gain over all-empty and its one-pair tie rule."""

from __future__ import annotations

import numpy as np
import pytest

from bench.bench_real import against_empty, gain_interval, pair_weight


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
