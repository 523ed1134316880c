"""Defect look-alikes on every image: faint scattered spots, faint streaks, bright glints, soft smudges.

They make a classifier necessary (a clean image is not a flat one) yet stay learnable: each is
fainter, smaller or differently shaped than the real defect it resembles (``defects.py``).
"""

from __future__ import annotations

import numpy as np

from cascade.synth.noise import NoiseBanks
from cascade.synth.regions import RegionShape, blob_mask, inner_alpha
from cascade.synth.spots import add_spots

__all__ = ["add_distractors"]


def _faint_spots(img: np.ndarray, rng: np.random.Generator, lo: int, hi: int) -> None:
    """Scattered dark specks, some in loose groups: like pits, but fainter and without a stain."""
    count = int(rng.poisson(rng.uniform(5.0, 60.0)))
    if count == 0:
        return
    h, w = img.shape[0], hi - lo
    ys, xs = rng.integers(0, h, count), rng.integers(0, w, count)
    grouped = rng.random(count) < 0.3
    centre = int(rng.integers(0, count))
    ys[grouped] = np.clip(ys[centre] + rng.normal(0, 25, grouped.sum()), 0, h - 1).astype(ys.dtype)
    xs[grouped] = np.clip(xs[centre] + rng.normal(0, 40, grouped.sum()), 0, w - 1).astype(xs.dtype)
    add_spots(img[:, lo:hi], ys, xs, -rng.uniform(15.0, 35.0, count), sigma=rng.uniform(0.8, 1.4))


def _faint_streaks(img: np.ndarray, rng: np.random.Generator, lo: int, hi: int) -> None:
    """Long, faint vertical lines: like marks and scratches, but low-contrast and without a patch around them."""
    h = img.shape[0]
    ys = np.arange(h, dtype=np.float32)
    for _ in range(int(rng.integers(0, 5))):
        width = rng.uniform(0.8, 3.0)
        x0 = rng.uniform(lo + 4, hi - 4)
        cols = np.arange(max(lo, int(x0) - 8), min(hi, int(x0) + 9))
        if cols.size == 0:
            continue
        start = rng.uniform(-h, h * 0.6)
        stop = start + rng.uniform(60.0, 2.0 * h)
        envelope = np.clip(np.minimum(ys - start, stop - ys) / 20.0, 0.0, 1.0)
        profile = np.exp(-(((cols[None, :] - x0) / width) ** 2))
        amp = rng.uniform(6.0, 14.0) * (1.0 if rng.random() < 0.5 else -1.0)
        img[:, cols[0] : cols[-1] + 1] += profile * (envelope * amp)[:, None]


def _glints(img: np.ndarray, rng: np.random.Generator, lo: int, hi: int) -> None:
    """Small bright glints, round or drawn out along the rolling direction."""
    count = int(rng.integers(0, 12))
    if count == 0:
        return
    h, w = img.shape[0], hi - lo
    ys, xs = rng.integers(0, h, count), rng.integers(0, w, count)
    peaks = rng.uniform(40.0, 100.0, count)
    add_spots(img[:, lo:hi], ys, xs, peaks, sigma=rng.uniform(0.7, 1.2), sigma_y=rng.uniform(0.8, 4.0))


def _smudge(img: np.ndarray, rng: np.random.Generator, banks: NoiseBanks, lo: int, hi: int) -> None:
    h = img.shape[0]
    bh = int(rng.integers(40, h + 1))
    bw = int(min(hi - lo, rng.integers(60, 400)))
    if bw < 8:
        return
    mask = blob_mask(rng, banks, int(0.6 * bh * bw), (bh, bw), RegionShape(roughness=0.2, grain=20.0))
    alpha = inner_alpha(mask, rng, banks, inset=0.0, soft=rng.uniform(10.0, 25.0))
    y0, x0 = int(rng.integers(0, h - bh + 1)), int(rng.integers(lo, hi - bw + 1))
    img[y0 : y0 + bh, x0 : x0 + bw] += alpha * (rng.uniform(4.0, 9.0) * (1.0 if rng.random() < 0.4 else -1.0))


def add_distractors(img: np.ndarray, rng: np.random.Generator, banks: NoiseBanks, columns: tuple[int, int]) -> None:
    """Draw defect look-alikes on ``img`` ``(H, W)`` float32 in place, within ``columns`` ``[lo, hi)``."""
    lo, hi = columns
    if hi - lo < 20:
        return
    _faint_spots(img, rng, lo, hi)
    _faint_streaks(img, rng, lo, hi)
    _glints(img, rng, lo, hi)
    if rng.random() < 0.3:
        _smudge(img, rng, banks, lo, hi)
