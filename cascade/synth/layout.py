"""Which classes an image has: a class combination drawn from relative weights (the real mix by default).

Where each class goes, and its shape and size, come from real layouts (``shapes.draw_layout``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["sample_combination"]


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
