"""The gate: which (image, class) pairs reach their segmenter.

In ``"cascade"`` mode class ``k`` of an image is segmented only when the classifier's probability is at
or above that class's ``prob_threshold`` and the class is not ``closed``; every other pair is answered
"absent" without running a segmenter. ``"segment_all"`` opens the gate for every pair (the baseline the
cascade is measured against).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cascade.constants import NUM_CLASSES
from cascade.specs import ClassParams

__all__ = ["GATE_MODES", "check_mode", "check_params", "gate"]

GATE_MODES: tuple[str, ...] = ("cascade", "segment_all")
"""Allowed prediction modes."""


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is one of ``GATE_MODES``; ``ValueError`` listing them otherwise."""
    if mode not in GATE_MODES:
        raise ValueError(f"unknown mode {mode!r}; allowed modes are {list(GATE_MODES)}")
    return mode


def check_params(params: Sequence[ClassParams], num_classes: int = NUM_CLASSES) -> tuple[ClassParams, ...]:
    """Return ``params`` as a tuple of ``num_classes`` ``ClassParams`` (one per class); ``ValueError`` otherwise."""
    if isinstance(params, ClassParams) or not isinstance(params, Sequence):
        raise ValueError(f"params must be a sequence of {num_classes} ClassParams (one per class), got {params!r}")
    params = tuple(params)
    if len(params) != num_classes or not all(isinstance(p, ClassParams) for p in params):
        raise ValueError(f"params must be {num_classes} ClassParams (one per class), got {params!r}")
    return params


def gate(probabilities: np.ndarray, params: Sequence[ClassParams], mode: str = "cascade") -> np.ndarray:
    """Decide which (image, class) pairs go to the segmenters.

    Args:
        probabilities: ``(N, C)`` classifier probabilities.
        params: one ``ClassParams`` per class; ``prob_threshold`` opens the gate (``p >= threshold``) unless
            the class is ``closed``.
        mode: ``"cascade"`` (gate on) or ``"segment_all"`` (every pair passes).

    Returns:
        ``(N, C)`` bool, True where the class's segmenter runs on the image.
    """
    check_mode(mode)
    probabilities = np.asarray(probabilities)
    params = check_params(params, len(params) if isinstance(params, Sequence) else NUM_CLASSES)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(params):
        raise ValueError(f"probabilities must have shape (N, {len(params)}), got {probabilities.shape}")
    if mode == "segment_all":
        return np.ones(probabilities.shape, dtype=bool)
    thresholds = np.array([np.inf if p.closed else p.prob_threshold for p in params], dtype=np.float64)
    return probabilities >= thresholds[None, :]
