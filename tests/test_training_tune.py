"""Tests for training.tune_thresholds.tune_cascade: the Dice-only default unchanged, cost weight and budget,
calibration (ranking kept), rare classes (minimum recall, unpredictable flag) and the stored curve.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cascade.calibration import calibrate
from cascade.gate_curve import GateCurve
from training.config import TuneConfig
from training.thresholds import tune_class
from training.tune_thresholds import tune_cascade

CLASS_IDS = (1, 2, 3)
CONFIG = TuneConfig(
    prob_thresholds=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
    pixel_thresholds=(0.4, 0.6),
    min_areas=(0, 50),
    tolerance=0.0,
    min_positives=3,
)


def _tuning_set(seed: int = 0, n: int = 120) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probabilities (N, 3), tables (N, 3, 2, 2), truth_empty (N, 3)); class 3 is rare (2 positives)."""
    rng = np.random.default_rng(seed)
    positive = np.stack([rng.random(n) < 0.3, rng.random(n) < 0.5, np.zeros(n, bool)], axis=1)
    positive[:2, 2] = True
    logits = np.where(positive, 1.0, -1.5) + rng.normal(0, 1.2, positive.shape)
    probabilities = 1 / (1 + np.exp(-3 * logits))  # over-confident
    probabilities[:, 2] *= 0.2  # the rare class: the classifier barely answers
    good = rng.uniform(0.5, 0.95, (n, 3, 2, 2))
    false_alarm = (rng.random((n, 3, 2, 2)) > 0.5).astype(float)
    tables = np.where(positive[:, :, None, None], good, false_alarm)
    return probabilities.astype(np.float32), tables, ~positive


def test_defaults_without_calibration_keep_the_dice_only_choice() -> None:
    probabilities, tables, empty = _tuning_set()
    config = dataclasses.replace(CONFIG, calibrate=False)
    tuned = tune_cascade(probabilities, tables, empty, CLASS_IDS, config)
    for k, class_id in enumerate(CLASS_IDS):
        expected = tune_class(
            probabilities[:, k], tables[:, k], empty[:, k], config.prob_thresholds, config.pixel_thresholds,
            config.min_areas, config.tolerance,
        )  # fmt: skip
        got = tuned.classes[class_id]
        assert (got.prob_threshold, got.pixel_threshold, got.min_area, got.dice) == (
            expected.prob_threshold, expected.pixel_threshold, expected.min_area, expected.dice,
        )  # fmt: skip
    assert tuned.calibration == () and tuned.calibration_report == {}
    assert tuned.curve.chosen == tuned.curve.dice_only and not tuned.curve.calibrated


def test_calibration_keeps_auc_and_lowers_ece() -> None:
    probabilities, tables, empty = _tuning_set()
    tuned = tune_cascade(probabilities, tables, empty, CLASS_IDS, CONFIG)
    report = tuned.calibration_report
    assert len(tuned.calibration) == 3 and tuned.curve.calibrated
    assert report["ece_after"] < report["ece_before"]
    for class_id in CLASS_IDS:
        entry = report["classes"][str(class_id)]
        if entry["auc_before"] is not None:
            assert entry["auc_after"] == pytest.approx(entry["auc_before"], abs=1e-12)
    calibrated = calibrate(probabilities, tuned.calibration)
    labels = ~empty
    for k in range(2):
        assert roc_auc_score(labels[:, k], calibrated[:, k]) == roc_auc_score(labels[:, k], probabilities[:, k])


@pytest.mark.parametrize("budget", [0.6, 0.8, 1.2])
def test_budget_is_respected_and_curve_stored(budget: float) -> None:
    probabilities, tables, empty = _tuning_set(1)
    config = dataclasses.replace(CONFIG, max_segmenter_runs_per_image=budget)
    tuned = tune_cascade(probabilities, tables, empty, CLASS_IDS, config)
    curve = tuned.curve
    assert curve.chosen.runs_per_image <= budget + 1e-9
    assert curve.dice_only.dice >= curve.chosen.dice - 1e-9
    assert curve.max_runs_per_image == budget
    assert GateCurve.from_dict(curve.to_dict()) == curve
    thresholds = tuple(tuned.classes[c].prob_threshold for c in CLASS_IDS)
    assert thresholds == curve.chosen.prob_thresholds
    # the chosen thresholds really cost what the curve says on the (calibrated) tuning probabilities
    calibrated = calibrate(probabilities.astype(np.float64), tuned.calibration)
    runs = float(np.sum(calibrated >= np.array(thresholds)[None, :]) / len(calibrated))
    assert runs == pytest.approx(curve.chosen.runs_per_image, abs=1e-6)


def test_cost_weight_trades_dice_for_fewer_runs() -> None:
    probabilities, tables, empty = _tuning_set(2)
    points = [
        tune_cascade(probabilities, tables, empty, CLASS_IDS, dataclasses.replace(CONFIG, cost_weight=w)).curve.chosen
        for w in (0.0, 0.05, 0.5)
    ]
    assert points[0].runs_per_image >= points[1].runs_per_image >= points[2].runs_per_image
    assert points[0].runs_per_image > points[2].runs_per_image


def test_rare_class_keeps_a_gate_and_unpredictable_class_is_flagged() -> None:
    probabilities, tables, empty = _tuning_set(3)
    free = tune_cascade(probabilities, tables, empty, CLASS_IDS, dataclasses.replace(CONFIG, calibrate=False))
    rare = free.curve.classes[2]
    assert rare.positives == 2
    assert not free.params[2].predictable and "2 positive image(s) to tune on" in rare.note  # < min_positives
    assert free.params[0].predictable and free.params[1].predictable
    constrained = tune_cascade(
        probabilities, tables, empty, CLASS_IDS, dataclasses.replace(CONFIG, calibrate=False, min_recall=1.0)
    )
    index = constrained.curve.classes[2].index(constrained.params[2].prob_threshold)
    assert constrained.curve.classes[2].recall[index] == 1.0  # the gate opens for both positives
    assert constrained.params[2].prob_threshold <= float(probabilities[:2, 2].min())


def test_class_missed_by_the_cascade_is_flagged() -> None:
    probabilities, tables, empty = _tuning_set(4)
    tables[:, 1][~empty[:, 1]] = 0.0  # the segmenter of class 2 never finds its defects
    tuned = tune_cascade(probabilities, tables, empty, CLASS_IDS, dataclasses.replace(CONFIG, min_positives=1))
    assert not tuned.params[1].predictable and "Dice 0.000 on positives" in tuned.curve.classes[1].note
    assert tuned.params[0].predictable


@pytest.mark.parametrize("tolerance", [0.0, 0.01, 0.05])
def test_tuned_points_lie_on_or_below_the_frontier(tolerance: float) -> None:
    probabilities, tables, empty = _tuning_set(5)
    for weight in (0.0, 0.05):
        config = dataclasses.replace(CONFIG, tolerance=tolerance, cost_weight=weight)
        curve = tune_cascade(probabilities, tables, empty, CLASS_IDS, config).curve
        for point in (curve.chosen, curve.dice_only):
            reachable = [p.dice for p in curve.frontier if p.runs_per_image <= point.runs_per_image + 1e-9]
            assert reachable and max(reachable) >= point.dice - 1e-6
            assert max(reachable) <= point.dice + tolerance * len(CLASS_IDS) + 1e-6 or weight > 0
