"""The classifier probe's noise level: the Hanley-McNeil standard error of a ROC AUC."""

from __future__ import annotations

import math

import pytest

from bench.bench_classifier_probe import auc_standard_error


@pytest.mark.parametrize(("positives", "negatives"), [(5, 20), (55, 245), (300, 300)])
def test_at_chance_it_is_the_mann_whitney_null_deviation(positives: int, negatives: int) -> None:
    expected = math.sqrt((positives + negatives + 1) / (12 * positives * negatives))
    assert auc_standard_error(0.5, positives, negatives) == pytest.approx(expected)


def test_it_shrinks_with_more_images_and_vanishes_at_a_perfect_auc() -> None:
    assert auc_standard_error(0.7, 55, 245) < auc_standard_error(0.7, 6, 19)
    assert auc_standard_error(1.0, 55, 245) == pytest.approx(0.0, abs=1e-12)
