"""Tests for cascade/calibration.py: the fit, ranking kept (AUC unchanged), ECE and reliability bins."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cascade.calibration import (
    Calibration,
    calibrate,
    expected_calibration_error,
    fit_calibration,
    reliability_bins,
)


def _overconfident(n: int, seed: int, sharpen: float = 3.0, shift: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z); reported probabilities sigmoid(sharpen * z + shift) (over-confident, biased)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-1.0, 1.5, n)
    labels = rng.random(n) < 1 / (1 + np.exp(-z))
    reported = 1 / (1 + np.exp(-(sharpen * z + shift)))
    return reported.astype(np.float32), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_recovers_temperature_and_reduces_ece(seed: int) -> None:
    reported, labels = _overconfident(4000, seed)
    calibration = fit_calibration(reported, labels)
    assert calibration.temperature == pytest.approx(3.0, rel=0.15)  # undoes the sharpening
    assert calibration.bias == pytest.approx(-1.0 / 3.0, abs=0.15)  # and the shift
    before = expected_calibration_error(reported, labels)
    after = expected_calibration_error(calibration.apply(reported), labels)
    assert before > 0.1 and after < 0.03


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_calibration_keeps_ranking_and_auc(seed: int) -> None:
    rng = np.random.default_rng(seed)
    probabilities = rng.beta(0.5, 2.0, size=(500, 3)).astype(np.float32)
    labels = rng.random((500, 3)) < probabilities
    calibrations = [fit_calibration(probabilities[:, k], labels[:, k]) for k in range(3)]
    calibrations.append(Calibration(temperature=0.25, bias=2.0))  # a sharp, shifted map keeps ranking too
    calibrated = calibrate(probabilities, calibrations[:3])
    assert calibrated.dtype == np.float32 and calibrated.shape == probabilities.shape
    for k in range(3):
        assert roc_auc_score(labels[:, k], calibrated[:, k]) == roc_auc_score(labels[:, k], probabilities[:, k])
        order = np.argsort(probabilities[:, k], kind="stable")
        assert np.all(np.diff(calibrated[order, k].astype(np.float64)) >= 0)
    sharp = calibrations[3].apply(probabilities[:, 0])
    assert roc_auc_score(labels[:, 0], sharp) == roc_auc_score(labels[:, 0], probabilities[:, 0])


def test_saturated_probabilities_stay_finite_and_ordered() -> None:
    p = np.array([0.0, 1e-30, 1e-6, 0.5, 1 - 1e-7, 1.0])
    out = Calibration(temperature=2.0, bias=-0.5).apply(p)
    assert np.all(np.isfinite(out)) and np.all(np.diff(out) > 0)


def _penalised_log_loss(p: np.ndarray, labels: np.ndarray, temperature: float, bias: float) -> float:
    with np.errstate(divide="ignore"):
        z = np.clip(np.log(p) - np.log1p(-p), -120.0, 120.0)  # the module's logit clip
    s = z / temperature + bias
    return float(np.sum(np.logaddexp(0.0, s) - labels * s) + 0.5 * ((1.0 / temperature - 1.0) ** 2 + bias**2))


@pytest.mark.parametrize("seed", [1, 2, 5, 9])
def test_fit_with_exact_zeros_reaches_the_optimum_not_a_divergent_step(seed: int) -> None:
    # Out-of-fold probabilities written with 6 decimals: exact zeros (logit at the -120 clip), some of them
    # positives. Undamped Newton steps overshot here (temperature 20, bias +6 to +79: every image ~1).
    from scipy.optimize import minimize

    rng = np.random.default_rng(seed)
    labels = rng.random(1000) < 0.09
    p = np.round(1 / (1 + np.exp(-(rng.normal(-6.0, 4.0, 1000) + 5.0 * labels))), 6)
    p[rng.random(1000) < 0.15] = 0.0
    calibration = fit_calibration(p, labels)
    fitted = _penalised_log_loss(p, labels, calibration.temperature, calibration.bias)
    assert fitted < _penalised_log_loss(p, labels, 1.0, 0.0)
    best = minimize(
        lambda v: _penalised_log_loss(p, labels, 1.0 / v[0], v[1]), [1.0, 0.0], bounds=[(1 / 20, None), (None, None)]
    )
    assert fitted <= best.fun + 1e-3
    assert calibration.bias < 0.0  # 9% positives: calibrated probabilities are low, not ~1 everywhere
    assert np.mean(calibration.apply(p)) == pytest.approx(labels.mean(), abs=0.05)


def test_no_positive_or_no_negative_gives_identity() -> None:
    p = np.linspace(0.01, 0.99, 20)
    assert fit_calibration(p, np.zeros(20, bool)).is_identity
    assert fit_calibration(p, np.ones(20, bool)).is_identity
    assert fit_calibration(np.array([]), np.array([], bool)).is_identity


def test_few_positives_stay_close_to_identity() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(40) * 0.3
    labels = np.zeros(40, bool)
    labels[np.argmax(p)] = True
    calibration = fit_calibration(p, labels)
    assert 0.3 < calibration.temperature < 3.0 and abs(calibration.bias) < 3.0


def test_calibrate_without_calibrations_returns_input_and_checks_shape() -> None:
    p = np.random.default_rng(0).random((4, 2)).astype(np.float32)
    assert calibrate(p, ()) is p
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        calibrate(p, [Calibration()] * 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"temperature": -1.0}, "temperature must be > 0"),
        ({"temperature": float("nan")}, "finite number"),
        ({"bias": "1"}, "bias must be a finite number"),
        ({"temperature": True}, "temperature must be a finite number"),
    ],
)
def test_calibration_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Calibration(**kwargs)


def test_calibration_dict_round_trip() -> None:
    calibration = Calibration(temperature=1.7, bias=-0.25)
    assert Calibration.from_dict(calibration.to_dict()) == calibration
    with pytest.raises(ValueError, match="unknown field"):
        Calibration.from_dict({"temperature": 1.0, "scale": 2.0})


@pytest.mark.parametrize(
    ("probabilities", "labels", "expected"),
    [
        ([0.9, 0.9, 0.9, 0.9], [0, 0, 0, 0], 0.9),  # confident and always wrong
        ([0.05, 0.05, 0.95, 0.95], [0, 0, 1, 1], 0.05),
        ([0.25, 0.25, 0.25, 0.25], [1, 0, 0, 0], 0.0),  # 25% said, 25% happened
        ([], [], 0.0),
    ],
)
def test_expected_calibration_error_known_values(probabilities: list, labels: list, expected: float) -> None:
    assert expected_calibration_error(np.array(probabilities), np.array(labels, bool)) == pytest.approx(expected)


def test_reliability_bins_count_every_probability_once() -> None:
    p = np.array([[0.0, 0.05], [0.1, 0.55], [0.999, 1.0]])
    y = np.array([[0, 0], [1, 1], [1, 1]], bool)
    confidence, frequency, count = reliability_bins(p, y, bins=10)
    assert count.sum() == 6 and count[0] == 2 and count[9] == 2 and count[1] == 1 and count[5] == 1
    assert frequency[0] == 0.0 and frequency[9] == 1.0 and np.isnan(confidence[3])
    with pytest.raises(ValueError, match="same shape"):
        reliability_bins(p, y[:, 0])
