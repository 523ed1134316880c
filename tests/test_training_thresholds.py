"""Tests of training.thresholds: Dice tables against the real post-processing, and the grid search."""

from __future__ import annotations

import numpy as np
import pytest

from cascade.manifest import ClassParams
from cascade.metric import dice_pairs
from cascade.postprocess import postprocess_map
from training.thresholds import dice_tables, grid_scores, pick_best, tune_class


def _brute_dice(prob_map: np.ndarray, truth: np.ndarray, pixel_threshold: float, min_area: int) -> float:
    mask = postprocess_map(prob_map, 1.0, ClassParams(pixel_threshold=pixel_threshold, min_area=min_area))
    return float(dice_pairs(mask[None, None], truth[None, None])[0, 0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dice_tables_match_postprocess_and_metric(seed: int) -> None:
    rng = np.random.default_rng(seed)
    maps = rng.random((5, 12, 20)).astype(np.float32)
    maps[0, 3, 4] = 0.5  # exactly on a threshold: ">=" must count it
    truth = rng.random((5, 12, 20)) > 0.7
    truth[1] = False  # empty truth
    maps[2] = 0.1  # nothing predicted at any threshold
    pixel_grid, area_grid = [0.7, 0.3, 0.5, 0.95], [0, 10, 60, 200]
    tables = dice_tables(maps, truth, pixel_grid, area_grid)
    assert tables.shape == (5, 4, 4)
    for i in range(5):
        for a, pt in enumerate(pixel_grid):
            for b, ma in enumerate(area_grid):
                assert tables[i, a, b] == pytest.approx(_brute_dice(maps[i], truth[i], pt, ma), abs=1e-12)


def test_dice_tables_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="must both be"):
        dice_tables(np.zeros((2, 4, 4)), np.zeros((2, 4, 5), bool), [0.5], [0])


def _known_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two positives (prob 0.9), a negative with a small false blob (prob 0.85), a negative with a big blob (prob 0.7).

    Only (prob threshold 0.8, pixel threshold 0.5, min area 50) gets every image right.
    """
    h, w = 20, 30
    maps = np.zeros((4, h, w), dtype=np.float32)
    truth = np.zeros((4, h, w), dtype=bool)
    for i in (0, 1):
        truth[i, 5:15, 5:15] = True  # 100 px defect
        maps[i, 3:17, 3:17] = 0.45  # halo: included at pixel threshold 0.4
        maps[i, 5:15, 5:15] = 0.8  # gone at pixel threshold 0.9
    maps[2, 0:5, 0:6] = 0.95  # 30 px false blob: removed by min area 50 (not 0)
    maps[3, 0:15, 10:25] = 0.95  # 225 px false blob: only the gate removes it
    probabilities = np.array([0.9, 0.9, 0.85, 0.7])
    return maps, truth, probabilities


def test_tune_class_finds_the_known_optimum() -> None:
    maps, truth, probabilities = _known_case()
    prob_grid, pixel_grid, area_grid = [0.5, 0.8, 0.95], [0.4, 0.5, 0.9], [0, 50, 150]
    tables = dice_tables(maps, truth, pixel_grid, area_grid)
    result = tune_class(probabilities, tables, ~truth.any(axis=(1, 2)), prob_grid, pixel_grid, area_grid)
    assert (result.prob_threshold, result.pixel_threshold, result.min_area) == (0.8, 0.5, 50)
    assert result.dice == pytest.approx(1.0)
    assert result.dice_segment_all == pytest.approx(0.75)  # the 225 px blob survives without the gate
    assert result.dice_empty == pytest.approx(0.5)
    assert result.scores.shape == (4, 3, 3)  # 0.0 added to the probability grid
    assert result.scores[0, 1, 1] == pytest.approx(result.dice_segment_all)


def test_grid_scores_gate_uses_greater_or_equal() -> None:
    tables = np.array([[[0.25]], [[1.0]]])  # image 0 positive with a poor mask, image 1 negative
    empty = np.array([False, True])
    scores = grid_scores(np.array([0.5, 0.2]), tables, empty, [0.0, 0.5, 0.6])
    # t=0: both segmented -> (0.25 + 1) / 2; t=0.5: image 0 at exactly 0.5 still passes; t=0.6: image 0 closed -> 0
    np.testing.assert_allclose(scores[:, 0, 0], [0.625, 0.625, 0.5])


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        (np.array([0.5, 0.9, 0.9, 0.9, 0.2]), (2,)),
        (np.array([0.9, 0.9, 0.1]), (0,)),  # lower median of an even plateau
        (np.array([[0.1, 0.8], [0.8, 0.8], [0.8, 0.3]]), (1, 0)),
        (np.array([0.3, 0.7]), (1,)),
    ],
)
def test_pick_best_takes_the_centre_of_a_plateau(scores: np.ndarray, expected: tuple[int, ...]) -> None:
    assert pick_best(scores) == expected


def test_tolerance_takes_the_centre_of_the_near_optimal_region() -> None:
    scores = np.array([0.9, 0.95, 0.945, 0.944, 0.90])
    assert pick_best(scores) == (1,)
    assert pick_best(scores, tolerance=0.01) == (2,)


def test_tune_class_rejects_mismatched_grid() -> None:
    with pytest.raises(ValueError, match="does not match"):
        tune_class(np.zeros(2), np.zeros((2, 3, 1)), np.ones(2, bool), [0.5], [0.5, 0.6], [0])
