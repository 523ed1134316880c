"""How each defect class looks: one renderer per class, drawing inside a region mask.

Every renderer takes the image's box ``img`` ``(h, w)`` float32 (a view, changed in place) and the
region ``mask`` ``(h, w)`` bool, and only changes pixels inside the mask, so the mask is the ground
truth of what is visible. Contrast is kept well above the look-alike distractors (``distractors.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from cascade.synth.noise import NoiseBanks, crop
from cascade.synth.regions import inner_alpha
from cascade.synth.spots import gaussian_spots

__all__ = [
    "RENDERERS",
    "Renderer",
    "render_blotches",
    "render_marks",
    "render_pits",
    "render_scratches",
]

Renderer = Callable[[np.ndarray, np.ndarray, np.random.Generator, NoiseBanks], None]
"""``render(img (h, w) float32, mask (h, w) bool, rng, banks)``: draws one defect region in place."""


def render_pits(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, banks: NoiseBanks) -> None:
    """Class 1: a cluster of small dark pits on a faint stain."""
    shape = mask.shape
    alpha = inner_alpha(mask, rng, banks, inset=1.5, soft=3.0, jag=1.5)
    stain = rng.uniform(8.0, 16.0) * (0.7 + 0.3 * crop(banks.smooth, rng, *shape))
    img -= alpha * stain
    inside = np.flatnonzero(alpha > 0.8)
    if inside.size == 0:
        inside = np.flatnonzero(mask)
    area = int(mask.sum())
    count = int(np.clip(area / rng.uniform(18.0, 35.0), 4, 2000))
    small = gaussian_spots(shape, rng.choice(inside, count), rng.uniform(0.6, 1.0, count), sigma=0.9)
    big_n = max(1, count // 6)
    big = gaussian_spots(shape, rng.choice(inside, big_n), rng.uniform(0.6, 1.0, big_n), sigma=1.8)
    img -= (small * rng.uniform(50.0, 85.0) + big * rng.uniform(40.0, 65.0)) * np.minimum(alpha * 1.5, 1.0)


def render_marks(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, banks: NoiseBanks) -> None:
    """Class 2: a thin vertical mark (dark core, sometimes bright) along a narrow region."""
    h, w = mask.shape
    alpha = inner_alpha(mask, rng, banks, inset=1.0, soft=2.0)
    row_count = mask.sum(axis=1).astype(np.float32)
    xs = np.arange(w, dtype=np.float32)
    centre = (mask * xs[None, :]).sum(axis=1) / np.maximum(row_count, 1.0)
    half = np.maximum(0.9, 0.2 * row_count)
    core = np.exp(-(((xs[None, :] - centre[:, None]) / half[:, None]) ** 2))
    along = 0.75 + 0.25 * cv2.resize(
        np.ascontiguousarray(crop(banks.smooth, rng, max(2, h // 6), 1)), (1, h), interpolation=cv2.INTER_LINEAR
    )
    amp = -rng.uniform(55.0, 90.0) if rng.random() < 0.75 else rng.uniform(45.0, 75.0)
    img += alpha * (core * along * amp - rng.uniform(8.0, 16.0))


def render_scratches(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, banks: NoiseBanks) -> None:
    """Class 3: a scuffed patch along the rolling direction with sharp scratch lines in it."""
    h, w = mask.shape
    alpha = inner_alpha(mask, rng, banks, inset=rng.uniform(1.0, 2.5), soft=rng.uniform(2.0, 5.0), jag=1.5)
    tone = rng.uniform(18.0, 32.0) * (1.0 if rng.random() < 0.65 else -1.0)
    img += alpha * (tone + crop(banks.streak, rng, h, w) * rng.uniform(14.0, 26.0))
    n_lines = int(np.clip(1 + w / rng.uniform(8.0, 20.0), 1, 40))
    ys = np.arange(h, dtype=np.float32)
    diagonal = rng.random() < 0.1
    for _ in range(n_lines):
        slope = rng.normal(0.0, 0.35 if diagonal else 0.04)
        width = rng.uniform(0.7, 1.8)
        amp = rng.uniform(40.0, 90.0) * (1.0 if rng.random() < 0.6 else -1.0)
        x_of_y = rng.uniform(0.0, w) + slope * (ys - rng.uniform(0.0, h))
        lo = int(max(0.0, np.floor(x_of_y.min()) - 4))
        hi = int(min(float(w), np.ceil(x_of_y.max()) + 5))
        if hi <= lo:
            continue
        cols = np.arange(lo, hi, dtype=np.float32)
        line = np.exp(-(((cols[None, :] - x_of_y[:, None]) / width) ** 2))
        start, stop = np.sort(rng.uniform(-0.3 * h, 1.3 * h, 2))
        envelope = np.clip(np.minimum(ys - start, stop - ys) / 10.0, 0.0, 1.0)
        img[:, lo:hi] += line * (envelope * amp)[:, None] * alpha[:, lo:hi]


def render_blotches(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, banks: NoiseBanks) -> None:
    """Class 4: a large dark blotch with ragged edges and a rough inside."""
    h, w = mask.shape
    alpha = inner_alpha(
        mask,
        rng,
        banks,
        inset=rng.uniform(1.0, 2.5),
        soft=rng.uniform(1.5, 3.5),
        jag=rng.uniform(2.0, 5.0),
        jag_grain=5.0,
    )
    texture = (
        crop(banks.fine, rng, h, w) * rng.uniform(5.0, 10.0)
        + crop(banks.smooth, rng, h, w) * rng.uniform(5.0, 12.0)
        + crop(banks.streak, rng, h, w) * rng.uniform(3.0, 8.0)
    )
    img -= alpha * (rng.uniform(35.0, 65.0) + texture)
    if rng.random() < 0.35:  # bright broken rim, as where scale has flaked off
        rim = (alpha > 0.05) & (alpha < 0.6) & (crop(banks.smooth, rng, h, w) > 0.6)
        img[rim] += rng.uniform(25.0, 50.0)


RENDERERS: dict[int, Renderer] = {1: render_pits, 2: render_marks, 3: render_scratches, 4: render_blotches}
"""Renderer per class id."""
