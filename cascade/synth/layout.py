"""Where defects go: which classes an image has, how large each class's area is, how it splits into regions.

Areas are drawn from the real per-class area distribution (log-linear interpolation between the
percentile knots in ``reference.py``); each class's area is split into a few regions whose boxes and
outlines follow the class's look (round clusters, thin vertical marks, bands, broad blotches).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cascade.constants import CLASS_IDS
from cascade.synth.reference import AREA_PERCENTILES, REAL_AREA_KNOTS
from cascade.synth.regions import RegionShape

__all__ = ["RegionPlan", "plan_regions", "sample_area", "sample_combination"]

_LOG_KNOTS = np.log(np.asarray(REAL_AREA_KNOTS, dtype=np.float64))
_PERCENTILES = np.asarray(AREA_PERCENTILES) / 100.0
_COMPONENTS: dict[int, tuple[float, ...]] = {
    1: (0.6, 0.3, 0.1),
    2: (0.7, 0.3),
    3: (0.3, 0.2, 0.15, 0.15, 0.1, 0.1),
    4: (0.7, 0.3),
}
_MIN_COMPONENT: dict[int, int] = {1: 150, 2: 300, 3: 120, 4: 500}
_MIN_SIDE = 6


@dataclass(frozen=True)
class RegionPlan:
    """One region to draw: its pixel area, bounding box and outline.

    Attributes:
        area: pixels the region should cover.
        box: ``(bh, bw)`` of its bounding box.
        shape: outline parameters.
    """

    area: int
    box: tuple[int, int]
    shape: RegionShape


def sample_combination(rng: np.random.Generator, weights: Mapping[str, float]) -> tuple[int, ...]:
    """Draw the set of classes present in one image.

    Args:
        rng: per-image random generator.
        weights: relative weight per combination string of class ids (``""`` = clean, ``"34"`` = 3 and 4).

    Returns:
        The present class ids, ascending (empty for a clean image).
    """
    combos = list(weights)
    probs = np.asarray([weights[c] for c in combos], dtype=np.float64)
    choice = combos[int(rng.choice(len(combos), p=probs / probs.sum()))]
    return tuple(sorted(int(ch) for ch in choice))


def sample_area(rng: np.random.Generator, class_id: int) -> int:
    """Draw a class's total defect area in pixels from the real area distribution."""
    if class_id not in CLASS_IDS:
        raise ValueError(f"unknown class id {class_id!r}; allowed: {CLASS_IDS}")
    u = rng.random()
    return round(float(np.exp(np.interp(u, _PERCENTILES, _LOG_KNOTS[class_id - 1]))))


def _split(rng: np.random.Generator, class_id: int, area: int) -> list[int]:
    probs = np.asarray(_COMPONENTS[class_id])
    count = int(rng.choice(len(probs), p=probs)) + 1
    count = max(1, min(count, area // _MIN_COMPONENT[class_id]))
    if count == 1:
        return [area]
    shares = rng.dirichlet(np.full(count, 2.0))
    return [max(_MIN_COMPONENT[class_id], int(area * s)) for s in shares]


def _box(area: int, fill: float, aspect: float, height: int, width: int) -> tuple[int, int]:
    box_area = area / fill
    bh = np.sqrt(box_area / aspect)
    bh = int(np.clip(round(bh), _MIN_SIDE, height))
    bw = int(np.clip(round(box_area / bh), _MIN_SIDE, width))
    return bh, bw


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _plan_pits(rng: np.random.Generator, area: int, height: int, width: int) -> tuple[tuple[int, int], RegionShape]:
    box = _box(area, 0.45, _log_uniform(rng, 0.5, 3.0), height, width)
    return box, RegionShape(exponent=2.0, roughness=0.25, grain=max(3.0, 0.2 * min(box)))


def _plan_marks(rng: np.random.Generator, area: int, height: int, width: int) -> tuple[tuple[int, int], RegionShape]:
    bh, bw = _box(area, 0.5, _log_uniform(rng, 0.06, 0.3), height, width)
    return (bh, max(bw, 10)), RegionShape(exponent=2.5, roughness=0.08, grain=10.0)


def _plan_scratches(
    rng: np.random.Generator, area: int, height: int, width: int
) -> tuple[tuple[int, int], RegionShape]:
    band_prob = float(np.clip(np.log(area / 8000.0) / np.log(60000.0 / 8000.0), 0.0, 1.0))
    if rng.random() < band_prob:  # large: a band over the whole image height
        box = _box(area, 0.85, 0.01, height, width)
        return box, RegionShape(exponent=4.0, roughness=0.12, grain=0.15 * box[1] + 6.0, span_y=rng.uniform(0.6, 0.9))
    box = _box(area, 0.55, _log_uniform(rng, 0.06, 0.45), height, width)
    return box, RegionShape(exponent=rng.uniform(3.0, 5.0), roughness=0.08, grain=max(4.0, 0.3 * min(box)))


def _plan_blotches(rng: np.random.Generator, area: int, height: int, width: int) -> tuple[tuple[int, int], RegionShape]:
    if area >= 60 * height and rng.random() < 0.3:  # runs over the whole image height
        box = _box(area, 0.6, 0.01, height, width)
        return box, RegionShape(roughness=0.3, grain=max(5.0, 0.15 * box[1]), span_y=rng.uniform(0.7, 0.95))
    box = _box(area, 0.42, _log_uniform(rng, 0.7, 5.0), height, width)
    return box, RegionShape(exponent=2.0, roughness=0.3, grain=max(5.0, 0.15 * min(box)))


_PLANNERS = {1: _plan_pits, 2: _plan_marks, 3: _plan_scratches, 4: _plan_blotches}


def plan_regions(rng: np.random.Generator, class_id: int, area: int, height: int, width: int) -> list[RegionPlan]:
    """Split a class's area into regions with boxes that fit ``(height, width)``.

    Args:
        rng: per-image random generator.
        class_id: 1..4.
        area: total pixels of the class in the image.
        height: image height.
        width: usable sheet width (boxes never exceed it).

    Returns:
        One plan per region.
    """
    if class_id not in CLASS_IDS:
        raise ValueError(f"unknown class id {class_id!r}; allowed: {CLASS_IDS}")
    plans = []
    for part in _split(rng, class_id, area):
        box, shape = _PLANNERS[class_id](rng, part, height, width)
        plans.append(RegionPlan(area=min(part, int(0.95 * box[0] * box[1])), box=box, shape=shape))
    return plans
