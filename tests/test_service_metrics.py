"""Tests for service/metrics.py: the out-of-distribution histogram, verdict counts and rolling drift statistics."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cascade.results import ImagePrediction
from service.metrics import ServiceMetrics


def _samples(metrics: ServiceMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _pred(score: float | None, threshold: float = 1.2) -> ImagePrediction:
    verdict = None if score is None else score <= threshold
    return ImagePrediction("x.png", 8, 8, (), ood_score=score, in_distribution=verdict)


def test_ood_histogram_verdicts_and_drift_over_the_last_images() -> None:
    metrics = ServiceMetrics(ood_window=4)
    before = _samples(metrics)
    assert math.isnan(before[("cascade_ood_recent_flagged_share", ())])
    assert math.isnan(before[("cascade_ood_threshold", ())])
    metrics.register_ood(1.2)
    metrics.observe_predictions([_pred(0.5), _pred(0.9), _pred(3.0), _pred(None)], "interactive")
    samples = _samples(metrics)
    assert samples[("cascade_ood_threshold", ())] == 1.2
    assert samples[("cascade_ood_score_count", ())] == 3  # the image without a score is not counted
    assert samples[("cascade_ood_score_bucket", (("le", "1.0"),))] == 2
    assert samples[("cascade_ood_score_bucket", (("le", "+Inf"),))] == 3
    assert samples[("cascade_ood_images_total", (("in_distribution", "true"),))] == 2
    assert samples[("cascade_ood_images_total", (("in_distribution", "false"),))] == 1
    assert samples[("cascade_ood_recent_flagged_share", ())] == pytest.approx(1 / 3)
    assert samples[("cascade_ood_recent_mean_score", ())] == pytest.approx(4.4 / 3)
    # a shift: the window of 4 forgets the oldest images, the totals do not
    metrics.observe_predictions([_pred(5.0), _pred(6.0), _pred(7.0)], "background")
    samples = _samples(metrics)
    assert samples[("cascade_ood_recent_images", ())] == 4
    assert samples[("cascade_ood_recent_flagged_share", ())] == 1.0
    assert samples[("cascade_ood_recent_mean_score", ())] == pytest.approx((3 + 5 + 6 + 7) / 4)
    assert samples[("cascade_ood_images_total", (("in_distribution", "false"),))] == 4
    metrics.register_ood(None)
    assert math.isnan(_samples(metrics)[("cascade_ood_threshold", ())])
    with pytest.raises(ValueError, match="ood_window"):
        ServiceMetrics(ood_window=0)
