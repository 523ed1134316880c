"""Parity of a runtime against the torch fp32 reference on the same inputs.

A runtime passes when, on the probe batch, its classifier probabilities are within the tolerance of
its precision (``1e-3`` for fp32 runtimes, ``2e-2`` for bf16/fp16) of the reference, the mean absolute
difference of its segmenter probability maps is within the same tolerance, and its binarised masks
(each class's ``pixel_threshold``) agree with the reference's on at least ``MIN_MASK_AGREEMENT`` of
the pixels, for every class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from cascade.runtimes.base import Runtime

__all__ = ["MIN_MASK_AGREEMENT", "PARITY_TOLERANCE", "Outputs", "Parity", "compare", "run_outputs"]

PARITY_TOLERANCE: dict[str, float] = {"fp32": 1e-3, "bf16": 2e-2, "fp16": 2e-2}
"""Largest allowed probability difference per runtime precision."""

MIN_MASK_AGREEMENT: float = 0.995
"""Smallest allowed fraction of pixels whose binarised value matches the reference."""


@dataclass(frozen=True)
class Outputs:
    """All outputs of a runtime on one batch.

    Attributes:
        probabilities: ``(N, 4)`` classifier probabilities.
        maps: class id -> ``(N, H, W)`` segmenter probabilities.
    """

    probabilities: np.ndarray
    maps: Mapping[int, np.ndarray]


def run_outputs(runtime: Runtime, batch: np.ndarray) -> Outputs:
    """Run the classifier and every segmenter of ``runtime`` on ``batch`` ``(N, 3, H, W)``."""
    return Outputs(runtime.classify(batch), {cid: runtime.segment(cid, batch) for cid in runtime.class_ids})


@dataclass(frozen=True)
class Parity:
    """How closely a runtime reproduces the reference.

    Attributes:
        prob_max_abs: largest classifier probability difference.
        map_max_abs: largest segmenter probability difference (reported, not judged: single pixels vary).
        map_mean_abs: mean segmenter probability difference (worst class).
        mask_agreement: fraction of equal binarised pixels (worst class).
        tolerance: the bound applied to ``prob_max_abs`` and ``map_mean_abs``.
        passed: all bounds hold.
    """

    prob_max_abs: float
    map_max_abs: float
    map_mean_abs: float
    mask_agreement: float
    tolerance: float
    passed: bool

    def to_dict(self) -> dict[str, float | bool]:
        """JSON-ready dict."""
        return asdict(self)


def compare(reference: Outputs, candidate: Outputs, *, precision: str, pixel_thresholds: Sequence[float]) -> Parity:
    """Compare a candidate's outputs to the reference's.

    Args:
        reference: torch fp32 outputs.
        candidate: the runtime's outputs on the same batch.
        precision: the candidate's precision (selects the tolerance).
        pixel_thresholds: per-class pixel thresholds, in the order of ``reference.maps``.
    """
    if precision not in PARITY_TOLERANCE:
        raise ValueError(f"unknown precision {precision!r}; allowed: {list(PARITY_TOLERANCE)}")
    if set(reference.maps) != set(candidate.maps):
        raise ValueError(f"class ids differ: reference {sorted(reference.maps)} vs candidate {sorted(candidate.maps)}")
    tolerance = PARITY_TOLERANCE[precision]
    prob_max = float(np.max(np.abs(reference.probabilities - candidate.probabilities), initial=0.0))
    map_max = map_mean = 0.0
    agreement = 1.0
    for threshold, cid in zip(pixel_thresholds, reference.maps, strict=True):
        ref, out = reference.maps[cid], candidate.maps[cid]
        diff = np.abs(ref - out)
        map_max = max(map_max, float(diff.max(initial=0.0)))
        map_mean = max(map_mean, float(diff.mean()) if diff.size else 0.0)
        agreement = min(agreement, float(np.mean((ref >= threshold) == (out >= threshold))) if ref.size else 1.0)
    passed = prob_max <= tolerance and map_mean <= tolerance and agreement >= MIN_MASK_AGREEMENT
    return Parity(prob_max, map_max, map_mean, agreement, tolerance, passed)
