"""Gate economics: choosing each class's gate threshold for Dice *and* segmenter cost.

The cascade's cost is dominated by segmenter runs: class ``k``'s segmenter runs on the share ``pass_k(t)``
of images whose (calibrated) probability reaches its gate threshold ``t``. Kaggle mean Dice is the mean of
the per-class mean Dice, so with ``C`` classes the objective

    Dice - cost_weight * runs_per_image = sum_k [dice_k(t_k) / C - cost_weight * pass_k(t_k)]

separates over the classes, and a budget ``sum_k pass_k(t_k) <= max_runs_per_image`` couples them only
through the total number of runs. Both are solved exactly by a small dynamic programme over the total
number of segmenter runs on the tuning images (:func:`choose_gates`), which also gives the Pareto
frontier of mean Dice against runs per image (:func:`pareto_frontier`).

For each class and gate threshold, :func:`class_options` records the best Dice over the pixel threshold and
min-area (the curve and the frontier are this upper envelope) and the pixel threshold and min-area that
``training.thresholds.pick_best`` chooses at that threshold with the tuning tolerance (what a chosen point
gets: at most ``tolerance`` below the envelope, in the middle of its near-optimal region). ``min_recall``
removes the thresholds that pass fewer than that share of the class's positive tuning images (the gate of a
rare class then still opens); the threshold 0 (always open) is always allowed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cascade.gate_curve import ClassGateCurve, GateCurve, GatePoint
from training.thresholds import pick_best

__all__ = ["ClassOptions", "GateChoice", "choose_gates", "class_options", "gate_curve", "pareto_frontier"]

logger = logging.getLogger(__name__)

MAX_FRONTIER_POINTS: int = 64
"""The frontier stored in a bundle is thinned to at most this many points (the ends always kept)."""


@dataclass(frozen=True)
class ClassOptions:
    """One class's choices: what each gate threshold of the grid scores and costs on the tuning images.

    Attributes:
        gates: ``(T,)`` ascending gate thresholds (the first is 0).
        dice: ``(T,)`` the class's best mean Dice at each threshold (``best_pixel_index``/``best_area_index``).
        best_pixel_index: ``(T,)`` index into the pixel-threshold grid of that best Dice.
        best_area_index: ``(T,)`` index into the min-area grid of that best Dice.
        pixel_index: ``(T,)`` pixel-threshold index chosen at each gate threshold with the tolerance.
        area_index: ``(T,)`` min-area index chosen at each gate threshold with the tolerance.
        passed: ``(T,)`` images whose gate opens (segmenter runs on the tuning images).
        recall: ``(T,)`` share of positive images whose gate opens (1 without positives).
        admissible: ``(T,)`` thresholds that satisfy ``min_recall``.
        positives: positive tuning images.
    """

    gates: np.ndarray
    dice: np.ndarray
    best_pixel_index: np.ndarray
    best_area_index: np.ndarray
    pixel_index: np.ndarray
    area_index: np.ndarray
    passed: np.ndarray
    recall: np.ndarray
    admissible: np.ndarray
    positives: int

    @property
    def n_images(self) -> int:
        """Tuning images (the gate always opens at threshold 0)."""
        return int(self.passed[0])


def class_options(
    probabilities: np.ndarray,
    scores: np.ndarray,
    truth_empty: np.ndarray,
    gates: Sequence[float],
    tolerance: float = 0.0,
    min_recall: float = 0.0,
) -> ClassOptions:
    """Score and cost of every gate threshold of one class.

    Args:
        probabilities: ``(N,)`` gate probabilities (out-of-fold, calibrated when the bundle calibrates).
        scores: ``(T, P, M)`` mean Dice grid from ``training.thresholds.grid_scores`` over ``gates``.
        truth_empty: ``(N,)`` True where the class is absent.
        gates: ``T`` ascending gate thresholds starting at 0.
        tolerance: near-ties of (pixel threshold, min-area) within this are resolved to the plateau centre.
        min_recall: thresholds passing a smaller share of the positive images are not admissible.
    """
    gates_arr = np.asarray(gates, dtype=np.float64)
    if gates_arr.ndim != 1 or gates_arr[0] != 0.0 or np.any(np.diff(gates_arr) <= 0):
        raise ValueError(f"gates must be strictly ascending and start at 0, got {list(gates)}")
    if scores.shape[0] != len(gates_arr):
        raise ValueError(f"scores has {scores.shape[0]} gate thresholds, gates {len(gates_arr)}")
    p = np.asarray(probabilities, dtype=np.float64)
    positive = ~np.asarray(truth_empty, dtype=bool)
    opened = p[None, :] >= gates_arr[:, None]
    passed = opened.sum(axis=1)
    positives = int(positive.sum())
    recall = opened[:, positive].sum(axis=1) / positives if positives else np.ones(len(gates_arr))
    picks = np.array([pick_best(scores[t], max(tolerance, 1e-9)) for t in range(len(gates_arr))], dtype=np.int64)
    best = np.array([pick_best(scores[t]) for t in range(len(gates_arr))], dtype=np.int64)
    dice = scores[np.arange(len(gates_arr)), best[:, 0], best[:, 1]]
    admissible = recall >= min_recall - 1e-12
    admissible[0] = True
    return ClassOptions(
        gates_arr, dice, best[:, 0], best[:, 1], picks[:, 0], picks[:, 1], passed, recall, admissible, positives
    )


@dataclass(frozen=True)
class GateChoice:
    """A gate threshold per class and what the whole cascade scores and costs with them.

    Attributes:
        indices: index into each class's ``gates``.
        runs_per_image: segmenter runs per tuning image, summed over the classes.
        dice: Kaggle mean Dice on the tuning images.
    """

    indices: tuple[int, ...]
    runs_per_image: float
    dice: float


def _evaluate(options: Sequence[ClassOptions], indices: Sequence[int]) -> GateChoice:
    n = options[0].n_images
    runs = sum(int(o.passed[i]) for o, i in zip(options, indices, strict=True)) / n
    dice = float(np.mean([o.dice[i] for o, i in zip(options, indices, strict=True)]))
    return GateChoice(tuple(int(i) for i in indices), runs, dice)


def _best_by_total(options: Sequence[ClassOptions], cost_weight: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """DP over classes: best objective for every exact total of segmenter runs, with back-pointers."""
    n, c = options[0].n_images, len(options)
    if any(o.n_images != n for o in options):
        raise ValueError("every class must be tuned on the same images")
    best = np.full(c * n + 1, -np.inf)
    best[0] = 0.0
    pointers = []
    for o in options:
        new = np.full_like(best, -np.inf)
        pointer = np.full(best.shape, -1, dtype=np.int64)
        for t in np.flatnonzero(o.admissible):
            runs = int(o.passed[t])
            value = o.dice[t] / c - cost_weight * runs / n
            shifted = np.full_like(best, -np.inf)
            shifted[runs:] = best[: len(best) - runs] + value
            better = shifted > new
            new[better], pointer[better] = shifted[better], t
        best = new
        pointers.append(pointer)
    return best, pointers


def _trace(options: Sequence[ClassOptions], pointers: list[np.ndarray], total: int) -> tuple[int, ...]:
    indices = []
    for o, pointer in zip(reversed(options), reversed(pointers), strict=True):
        t = int(pointer[total])
        indices.append(t)
        total -= int(o.passed[t])
    return tuple(reversed(indices))


def choose_gates(
    options: Sequence[ClassOptions], cost_weight: float = 0.0, max_runs_per_image: float | None = None
) -> GateChoice:
    """The gate thresholds maximising ``Dice - cost_weight * runs_per_image`` within the budget.

    Among equal objectives the choice with fewer runs wins. When no choice fits the budget, the cheapest
    admissible one is returned (and a warning logged).

    Args:
        options: one :func:`class_options` per class, on the same tuning images.
        cost_weight: mean Dice given up for one segmenter run per image saved (0: Dice only).
        max_runs_per_image: budget of segmenter runs per image (None: unlimited).
    """
    if cost_weight < 0:
        raise ValueError(f"cost_weight must be >= 0, got {cost_weight}")
    best, pointers = _best_by_total(options, cost_weight)
    n = options[0].n_images
    cap = len(best) - 1 if max_runs_per_image is None else int(np.floor(max_runs_per_image * n + 1e-9))
    feasible = best[: cap + 1]
    if not np.isfinite(feasible).any():
        cheapest = int(np.flatnonzero(np.isfinite(best))[0])
        logger.warning(
            "no gate fits the budget of %.3f segmenter runs per image; the cheapest needs %.3f",
            max_runs_per_image, cheapest / n,
        )  # fmt: skip
        return _evaluate(options, _trace(options, pointers, cheapest))
    top = np.max(feasible[np.isfinite(feasible)])
    total = int(np.flatnonzero(feasible >= top - 1e-12)[0])
    return _evaluate(options, _trace(options, pointers, total))


def pareto_frontier(options: Sequence[ClassOptions], max_points: int = MAX_FRONTIER_POINTS) -> list[GateChoice]:
    """Pareto-optimal choices: the highest mean Dice reachable at each number of runs per image.

    Returns:
        Choices by increasing runs per image with strictly increasing Dice, thinned to ``max_points``
        (the cheapest and the best always kept).
    """
    best, pointers = _best_by_total(options, 0.0)
    frontier: list[GateChoice] = []
    top = -np.inf
    for total in np.flatnonzero(np.isfinite(best)):
        if best[total] > top + 1e-12:
            top = best[total]
            frontier.append(_evaluate(options, _trace(options, pointers, int(total))))
    if len(frontier) > max_points:
        keep = np.unique(np.round(np.linspace(0, len(frontier) - 1, max_points)).astype(int))
        frontier = [frontier[i] for i in keep]
    return frontier


def gate_curve(
    options: Sequence[ClassOptions],
    chosen: GateChoice,
    dice_only: GateChoice,
    *,
    pixel_grid: Sequence[float],
    area_grid: Sequence[int],
    positive_dice: Sequence[float],
    notes: Sequence[str],
    cost_weight: float,
    max_runs_per_image: float | None,
    min_recall: float,
    calibrated: bool,
) -> GateCurve:
    """The manifest's :class:`~cascade.gate_curve.GateCurve` of a tuning result."""
    n = options[0].n_images

    def point(choice: GateChoice) -> GatePoint:
        thresholds = tuple(float(o.gates[i]) for o, i in zip(options, choice.indices, strict=True))
        return GatePoint(round(choice.runs_per_image, 6), round(min(max(choice.dice, 0.0), 1.0), 6), thresholds)

    classes = tuple(
        ClassGateCurve(
            prob_thresholds=tuple(float(g) for g in o.gates),
            dice=tuple(round(float(d), 6) for d in o.dice),
            pass_rate=tuple(round(float(v) / n, 6) for v in o.passed),
            recall=tuple(round(float(r), 6) for r in o.recall),
            pixel_thresholds=tuple(float(pixel_grid[i]) for i in o.best_pixel_index),
            min_areas=tuple(int(area_grid[i]) for i in o.best_area_index),
            positives=o.positives,
            positive_dice=round(float(d), 6),
            note=note,
        )
        for o, d, note in zip(options, positive_dice, notes, strict=True)
    )
    frontier = [point(f) for f in pareto_frontier(options)]
    # rounding must not break the strict monotonicity the manifest checks
    kept: list[GatePoint] = []
    for p in frontier:
        if not kept or (p.runs_per_image > kept[-1].runs_per_image and p.dice > kept[-1].dice):
            kept.append(p)
    return GateCurve(
        images=n,
        classes=classes,
        frontier=tuple(kept),
        chosen=point(chosen),
        dice_only=point(dice_only),
        cost_weight=float(cost_weight),
        max_runs_per_image=None if max_runs_per_image is None else float(max_runs_per_image),
        min_recall=float(min_recall),
        calibrated=calibrated,
    )
