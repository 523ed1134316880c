"""Probability calibration of the classifier: a per-class temperature and bias on the logit.

A calibrated probability is ``sigmoid(logit(p) / temperature + bias)`` (Platt scaling written as a
temperature and a bias). The map is strictly increasing for every ``temperature > 0``, so it keeps the
ranking of the images (ROC AUC unchanged) and a gate threshold on calibrated probabilities is a gate
threshold on the raw ones; isotonic regression would flatten ties into the ranking, which is why it is
not offered. :func:`fit_calibration` fits one class on labelled probabilities (the tuning fold's
out-of-fold ones in training); the predictor applies :func:`calibrate` right after the classifier.
:func:`expected_calibration_error` and :func:`reliability_bins` measure the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cascade.typed_config import Dialect, from_dict

__all__ = ["Calibration", "calibrate", "expected_calibration_error", "fit_calibration", "reliability_bins"]

_LOGIT_LIMIT = 120.0
"""Logits are clipped to +-this, so probabilities of exactly 0 or 1 stay finite."""


_DIALECT = Dialect.of_fields(lambda path: f"calibration.{path}" if path else "calibration", check_scalars=False)


@dataclass(frozen=True)
class Calibration:
    """Calibration of one class: ``p' = sigmoid(logit(p) / temperature + bias)``.

    Attributes:
        temperature: > 0; above 1 softens over-confident probabilities, below 1 sharpens them.
        bias: added to the scaled logit (corrects a class's base rate).
    """

    temperature: float = 1.0
    bias: float = 0.0

    def __post_init__(self) -> None:
        for attr in ("temperature", "bias"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
                raise ValueError(f"Calibration.{attr} must be a finite number, got {value!r}")
            object.__setattr__(self, attr, float(value))
        if self.temperature <= 0:
            raise ValueError(f"Calibration.temperature must be > 0, got {self.temperature!r}")

    @property
    def is_identity(self) -> bool:
        """True when the map leaves probabilities unchanged."""
        return self.temperature == 1.0 and self.bias == 0.0

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of one class, same shape, float64."""
        return _sigmoid(_logit(probabilities) / self.temperature + self.bias)

    def to_dict(self) -> dict[str, float]:
        """JSON-ready dict."""
        return {"temperature": self.temperature, "bias": self.bias}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """From :meth:`to_dict` output, strictly (``cascade.typed_config``); ``ValueError`` names a bad field."""
        return from_dict(cls, data, _DIALECT)


def _logit(probabilities: np.ndarray) -> np.ndarray:
    p = np.asarray(probabilities, dtype=np.float64)
    with np.errstate(divide="ignore"):
        z = np.log(p) - np.log1p(-p)
    return np.clip(z, -_LOGIT_LIMIT, _LOGIT_LIMIT)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def calibrate(probabilities: np.ndarray, calibrations: Sequence[Calibration]) -> np.ndarray:
    """Apply one calibration per class.

    Args:
        probabilities: ``(N, C)`` classifier probabilities.
        calibrations: ``C`` calibrations, in class order (empty: returned unchanged).

    Returns:
        ``(N, C)`` calibrated probabilities, in the input's float dtype.
    """
    probabilities = np.asarray(probabilities)
    if not calibrations:
        return probabilities
    if probabilities.ndim != 2 or probabilities.shape[1] != len(calibrations):
        raise ValueError(f"probabilities must have shape (N, {len(calibrations)}), got {probabilities.shape}")
    dtype = probabilities.dtype if probabilities.dtype.kind == "f" else np.float32
    out = np.empty(probabilities.shape, dtype=dtype)
    for k, calibration in enumerate(calibrations):
        out[:, k] = probabilities[:, k] if calibration.is_identity else calibration.apply(probabilities[:, k])
    return out


def fit_calibration(
    probabilities: np.ndarray, labels: np.ndarray, prior_strength: float = 1.0, max_temperature: float = 20.0
) -> Calibration:
    """Fit one class's temperature and bias by maximum likelihood (damped Newton's method).

    A Gaussian prior pulls the fit towards the identity (``prior_strength`` is its weight relative to one
    image), so a class with a handful of positives moves little. With no positive or no negative image
    there is nothing to fit and the identity is returned. The objective (penalised log loss) is convex;
    every Newton step is halved until it lowers it (the bias alone moves while the temperature sits at its
    bound), so the fit never ends worse than the identity, also when some probabilities are exactly 0 or 1
    (logits at the clip, where full Newton steps overshoot).

    Args:
        probabilities: ``(N,)`` classifier probabilities of the class.
        labels: ``(N,)`` bool truth.
        prior_strength: weight of the prior ``((1/T - 1)^2 + bias^2) / 2``.
        max_temperature: upper bound of the temperature (keeps the map strictly increasing).
    """
    z = _logit(np.asarray(probabilities, dtype=np.float64).ravel())
    y = np.asarray(labels, dtype=np.float64).ravel()
    if z.shape != y.shape:
        raise ValueError(f"probabilities {z.shape} and labels {y.shape} must have the same length")
    if y.size == 0 or y.min() == y.max():
        return Calibration()
    design = np.stack([z, np.ones_like(z)], axis=1)
    prior = np.array([1.0, 0.0])
    floor = 1.0 / max_temperature

    def objective(theta: np.ndarray) -> float:
        s = design @ theta
        return float(np.sum(np.logaddexp(0.0, s) - y * s) + 0.5 * prior_strength * np.sum((theta - prior) ** 2))

    theta = prior.copy()
    value = objective(theta)
    for _ in range(100):
        p = _sigmoid(design @ theta)
        grad = design.T @ (p - y) + prior_strength * (theta - prior)
        weight = np.maximum(p * (1.0 - p), 1e-12)
        hess = (design * weight[:, None]).T @ design + prior_strength * np.eye(2)
        if theta[0] <= floor and grad[0] > 0.0:  # temperature at its bound: Newton on the bias alone
            step = np.array([0.0, grad[1] / hess[1, 1]])
        else:
            step = np.linalg.solve(hess, grad)
        for scale in 0.5 ** np.arange(40):
            candidate = theta - scale * step
            candidate[0] = max(candidate[0], floor)
            candidate_value = objective(candidate)
            if candidate_value <= value:
                break
        else:  # no step along it lowers the loss: at the optimum
            break
        moved = np.abs(candidate - theta).max()
        theta, value = candidate, candidate_value
        if moved < 1e-10:
            break
    return Calibration(temperature=1.0 / theta[0], bias=float(theta[1]))


def reliability_bins(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-width reliability diagram data.

    Args:
        probabilities: ``(N,)`` or ``(N, C)`` probabilities (pooled when 2-D).
        labels: same shape, bool truth.
        bins: number of equal-width bins on [0, 1].

    Returns:
        ``(confidence (bins,), frequency (bins,), count (bins,))``: mean probability and share of positives
        per bin (``nan`` in empty bins), and the bin sizes.
    """
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise ValueError(f"probabilities {p.shape} and labels {y.shape} must have the same shape")
    index = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    count = np.bincount(index, minlength=bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(index, weights=p, minlength=bins) / count
        frequency = np.bincount(index, weights=y, minlength=bins) / count
    return confidence, frequency, count


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: ``sum_b |freq_b - conf_b| * n_b / N`` over equal-width bins (0 on no data)."""
    confidence, frequency, count = reliability_bins(probabilities, labels, bins)
    total = count.sum()
    if total == 0:
        return 0.0
    filled = count > 0
    return float(np.sum(np.abs(frequency[filled] - confidence[filled]) * count[filled]) / total)
