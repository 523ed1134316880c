"""Post-processing of one class's probability map into its final mask.

Rules, in order, with the class's ``ClassParams``:

1. **pixel threshold** — a pixel is on when its segmenter probability is ``>= pixel_threshold``;
2. **small components** — when ``min_component_area > 0``, 8-connected components with fewer pixels
   are removed (``cv2.connectedComponentsWithStats``);
3. **min-area floor** — the class is emptied when the remaining mask has fewer than the floor's pixels.

**Soft gating** (``soft_gate=True``) scales the floor by the classifier's confidence::

    floor = min_area * 2 * (1 - probability)

so ``floor == min_area`` at ``probability = 0.5``, it falls to 0 as the classifier grows certain, and
it rises up to ``2 * min_area`` for a borderline classifier call (thresholds below 0.5). This is the
area-based blend of classifier and segmenter evidence used by published Severstal solutions (a
confident classifier lets small true defects through; a hesitant one needs a larger mask to
convince). It needs no extra network run, so it keeps the cascade's savings.
"""

from __future__ import annotations

import cv2
import numpy as np

from cascade.manifest import ClassParams

__all__ = ["binarize", "effective_min_area", "postprocess_map", "remove_small_components"]


def binarize(prob_map: np.ndarray, pixel_threshold: float) -> np.ndarray:
    """``(H, W)`` probabilities -> ``(H, W)`` bool, on where ``prob >= pixel_threshold``."""
    return prob_map >= pixel_threshold


def remove_small_components(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop 8-connected components with fewer than ``min_area`` pixels.

    Args:
        mask: ``(H, W)`` bool.
        min_area: smallest component kept; 0 or 1 keeps everything.

    Returns:
        ``(H, W)`` bool (``mask`` itself when nothing is removed).
    """
    if min_area <= 1 or not mask.any():
        return mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False
    if keep[1:count].all():
        return mask
    return keep[labels]


def effective_min_area(params: ClassParams, probability: float) -> float:
    """The min-area floor for one class of one image: ``min_area``, or with soft gating
    ``min_area * 2 * (1 - probability)``."""
    if params.soft_gate:
        return params.min_area * 2.0 * (1.0 - float(probability))
    return float(params.min_area)


def postprocess_map(prob_map: np.ndarray, probability: float, params: ClassParams) -> np.ndarray:
    """Apply the rules of the module docstring to one class's map.

    Args:
        prob_map: ``(H, W)`` float segmenter probabilities.
        probability: the classifier's probability for the class (used by soft gating).
        params: the class's parameters.

    Returns:
        ``(H, W)`` bool final mask (all False when the class is called absent).
    """
    mask = binarize(prob_map, params.pixel_threshold)
    mask = remove_small_components(mask, params.min_component_area)
    floor = effective_min_area(params, probability)
    if floor > 0 and int(np.count_nonzero(mask)) < floor:
        return np.zeros(mask.shape, dtype=bool)
    return mask
