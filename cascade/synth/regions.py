"""The soft 'ink' of a defect inside its region: an opacity that fades in a little inside the mask edge.

Defect looks are drawn with this alpha, so the ground truth (the mask) is a slightly loose region around
what is visible, as in Severstal.
"""

from __future__ import annotations

import cv2
import numpy as np

from cascade.synth.noise import NoiseBanks, crop

__all__ = ["inner_alpha"]


def inner_alpha(
    mask: np.ndarray,
    rng: np.random.Generator,
    banks: NoiseBanks,
    *,
    inset: float,
    soft: float,
    jag: float = 0.0,
    jag_grain: float = 3.0,
) -> np.ndarray:
    """Opacity of a defect's look inside its mask: 0 at the mask edge, 1 from ``inset + soft`` px in.

    Args:
        mask: ``(h, w)`` bool region.
        rng: per-image random generator.
        banks: precomputed noise.
        inset: pixels between the mask edge and where the look starts.
        soft: width in pixels of the fade-in.
        jag: amplitude in pixels of noise added to the distance (ragged visible edges).
        jag_grain: size in pixels of the jag noise features.

    Returns:
        ``(h, w)`` float32 in [0, 1], zero outside the mask.
    """
    # Edge padding: a region cut by its box (a band running off the image) does not fade at the cut.
    padded = np.pad(mask.view(np.uint8), 1, mode="edge")
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]
    if jag > 0:
        h, w = mask.shape
        scale = 3.0 / max(jag_grain, 1.0)
        small = crop(banks.smooth, rng, max(2, int(h * scale) + 2), max(2, int(w * scale) + 2))
        dist = dist + cv2.resize(np.ascontiguousarray(small), (w, h), interpolation=cv2.INTER_LINEAR) * jag
    alpha = np.clip((dist - inset) / max(soft, 1e-3), 0.0, 1.0)
    alpha[~mask] = 0.0
    return alpha.astype(np.float32, copy=False)
