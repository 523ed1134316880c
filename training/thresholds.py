"""Threshold search math: per-class grids of (probability threshold, pixel threshold, min-area) scored by
Kaggle Dice, vectorised.

Kaggle mean Dice is a mean over (image, class) pairs, so each class is tuned on its own. For one class and
one image, the Dice for every (pixel threshold, min-area) pair follows from two histograms of the
probability map (all pixels, truth pixels) over the pixel-threshold grid: one pass over the pixels gives
the predicted area and the intersection at every threshold (:func:`dice_tables`). The gate then picks,
per image, either that Dice (gate open) or the empty-prediction score (1 when the truth is empty, else 0),
and the score of every grid point is two matrix products (:func:`grid_scores`).

The rules match ``cascade.gate`` and ``cascade.postprocess``: the gate opens at ``p >= prob_threshold``,
a pixel is on at ``prob >= pixel_threshold``, a mask with fewer than ``min_area`` pixels is emptied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ClassTuning", "dice_tables", "grid_scores", "pick_best", "tune_class"]


def dice_tables(
    prob_maps: np.ndarray, truth: np.ndarray, pixel_thresholds: Sequence[float], min_areas: Sequence[int]
) -> np.ndarray:
    """Dice of every image for every (pixel threshold, min-area) pair, as if the gate were open.

    Args:
        prob_maps: ``(B, H, W)`` float segmenter probabilities.
        truth: ``(B, H, W)`` bool ground truth of the class.
        pixel_thresholds: grid of pixel thresholds (any order).
        min_areas: grid of min-area floors.

    Returns:
        ``(B, len(pixel_thresholds), len(min_areas))`` float64 Dice (empty vs empty = 1).
    """
    prob_maps = np.asarray(prob_maps)
    truth = np.asarray(truth, dtype=bool)
    if prob_maps.shape != truth.shape or prob_maps.ndim != 3:
        raise ValueError(f"prob_maps {prob_maps.shape} and truth {truth.shape} must both be (B, H, W)")
    grid = np.asarray(pixel_thresholds, dtype=prob_maps.dtype if prob_maps.dtype.kind == "f" else np.float32)
    order = np.argsort(grid, kind="stable")
    sorted_grid = grid[order]
    n, k = len(prob_maps), len(grid)
    # bins[i, y, x] = number of thresholds <= value, so value >= t_j  <=>  bins > rank of t_j.
    bins = np.searchsorted(sorted_grid, prob_maps.reshape(n, -1), side="right")
    flat = (np.arange(n)[:, None] * (k + 1) + bins).ravel()
    hist_all = np.bincount(flat, minlength=n * (k + 1)).reshape(n, k + 1)
    hist_pos = np.bincount(flat[truth.reshape(-1)], minlength=n * (k + 1)).reshape(n, k + 1)
    # area at sorted threshold j = pixels with bins >= j + 1 (reverse cumulative sum).
    area_sorted = np.cumsum(hist_all[:, ::-1], axis=1)[:, ::-1][:, 1:]
    inter_sorted = np.cumsum(hist_pos[:, ::-1], axis=1)[:, ::-1][:, 1:]
    area = np.empty_like(area_sorted)
    inter = np.empty_like(inter_sorted)
    area[:, order], inter[:, order] = area_sorted, inter_sorted
    truth_area = truth.reshape(n, -1).sum(axis=1)[:, None]
    denom = area + truth_area
    dice = np.where(denom > 0, 2.0 * inter / np.maximum(denom, 1), 1.0)
    floors = np.asarray(min_areas, dtype=np.int64)
    emptied = (floors[None, None, :] > 0) & (area[:, :, None] < floors[None, None, :])
    empty_score = (truth_area == 0).astype(np.float64)[:, :, None]
    return np.where(emptied, empty_score, dice[:, :, None])


def grid_scores(
    probabilities: np.ndarray, tables: np.ndarray, truth_empty: np.ndarray, prob_thresholds: Sequence[float]
) -> np.ndarray:
    """Mean Dice of one class over its images for every grid point.

    Args:
        probabilities: ``(N,)`` classifier probabilities of the class.
        tables: ``(N, P, M)`` from :func:`dice_tables`.
        truth_empty: ``(N,)`` bool, True where the class is absent.
        prob_thresholds: grid of gate thresholds (length T).

    Returns:
        ``(T, P, M)`` mean Dice over the N images.
    """
    n, p, m = tables.shape
    if n == 0:
        raise ValueError("cannot tune thresholds on zero images")
    gate = (np.asarray(probabilities)[None, :] >= np.asarray(prob_thresholds, dtype=np.float64)[:, None]).astype(
        np.float64
    )
    empty = np.asarray(truth_empty, dtype=np.float64)
    scores = gate @ tables.reshape(n, p * m) + ((1.0 - gate) @ empty)[:, None]
    return (scores / n).reshape(len(prob_thresholds), p, m)


def pick_best(scores: np.ndarray, tolerance: float = 1e-9) -> tuple[int, ...]:
    """Index of the best grid point; among ties, the centre of the plateau (median index per axis, in order).

    Args:
        scores: grid of scores, any number of axes.
        tolerance: scores within this of the maximum count as ties.
    """
    ties = np.argwhere(scores >= scores.max() - tolerance)
    for axis in range(scores.ndim):
        values = np.unique(ties[:, axis])
        chosen = values[(len(values) - 1) // 2]
        ties = ties[ties[:, axis] == chosen]
    return tuple(int(i) for i in ties[0])


@dataclass(frozen=True)
class ClassTuning:
    """Result of tuning one class.

    Attributes:
        prob_threshold: chosen gate threshold.
        pixel_threshold: chosen pixel threshold.
        min_area: chosen min-area floor.
        dice: mean Dice of the class at the chosen point (cascade).
        dice_segment_all: mean Dice with the gate always open (prob threshold 0) at the chosen pixel threshold
            and min-area, i.e. what ``segment_all`` mode scores with these parameters.
        dice_empty: mean Dice of predicting the class absent everywhere.
        scores: ``(T, P, M)`` the whole grid, for sweeps and plots.
    """

    prob_threshold: float
    pixel_threshold: float
    min_area: int
    dice: float
    dice_segment_all: float
    dice_empty: float
    scores: np.ndarray


def tune_class(
    probabilities: np.ndarray,
    tables: np.ndarray,
    truth_empty: np.ndarray,
    prob_thresholds: Sequence[float],
    pixel_thresholds: Sequence[float],
    min_areas: Sequence[int],
    tolerance: float = 0.0,
) -> ClassTuning:
    """Pick the grid point of one class with the highest mean Dice (the centre of the points within
    ``tolerance`` of it, see :func:`pick_best`).

    ``0.0`` is added to ``prob_thresholds`` when missing, so the result is never below segment-all by more
    than ``tolerance``.

    Args:
        probabilities: ``(N,)`` classifier probabilities (out-of-fold).
        tables: ``(N, P, M)`` from :func:`dice_tables` with the same pixel-threshold and min-area grids.
        truth_empty: ``(N,)`` True where the class is absent.
        prob_thresholds: gate grid.
        pixel_thresholds: pixel grid (length P).
        min_areas: min-area grid (length M).
        tolerance: scores within this of the best count as ties.
    """
    if tables.shape[1:] != (len(pixel_thresholds), len(min_areas)):
        raise ValueError(
            f"tables shape {tables.shape} does not match grids of {len(pixel_thresholds)} pixel thresholds "
            f"and {len(min_areas)} min areas"
        )
    gates = sorted({0.0, *(float(t) for t in prob_thresholds)})
    scores = grid_scores(probabilities, tables, truth_empty, gates)
    t, p, m = pick_best(scores, max(tolerance, 1e-9))
    return ClassTuning(
        prob_threshold=gates[t],
        pixel_threshold=float(pixel_thresholds[p]),
        min_area=int(min_areas[m]),
        dice=float(scores[t, p, m]),
        dice_segment_all=float(scores[0, p, m]),
        dice_empty=float(np.mean(truth_empty)),
        scores=scores,
    )
