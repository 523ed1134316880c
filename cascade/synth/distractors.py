"""Defect look-alikes, on clean and defective images alike, as strong as the defects they resemble.

Real clean sheets carry dark stains and drips (like blotches), white oil blobs and saturated glints (like
scratch highlights), dark specks (like pits), long straight lines along the rolling direction (like marks
and scratches), transverse roll marks and soft smudges. What tells them from defects is their shape, not
their strength: stains run down the sheet in soft drips, oil blobs are round, lines are long and even.
"""

from __future__ import annotations

import cv2
import numpy as np

from cascade.synth.look import Look
from cascade.synth.noise import NoiseBanks, crop
from cascade.synth.spots import add_spots

__all__ = ["add_distractors"]


def _taper(width: int, ramp: float = 40.0) -> np.ndarray:
    """``(1, width)`` factor fading from 0 at a box's left and right edges to 1 inside (no straight box edges)."""
    x = np.arange(width, dtype=np.float32)
    return np.clip(np.minimum(x, width - 1 - x) / np.float32(ramp), 0.0, 1.0)[None, :]


def _stains(img: np.ndarray, rng: np.random.Generator, banks: NoiseBanks, lo: int, hi: int, look: Look) -> None:
    """Dark drips and stains hanging down the sheet: thresholded noise drawn out vertically."""
    h = img.shape[0]
    bw = int(min(hi - lo, np.exp(rng.uniform(np.log(120), np.log(1600)))))
    x0 = int(rng.integers(lo, hi - bw + 1))
    stretch = rng.uniform(3.0, 8.0)
    small = crop(banks.smooth, rng, max(3, int(h / (3.0 * stretch)) + 2), max(3, bw // 3 + 2))
    field = cv2.resize(np.ascontiguousarray(small), (bw, h), interpolation=cv2.INTER_LINEAR)
    field += crop(banks.smooth, rng, h, bw) * np.float32(rng.uniform(0.1, 0.5))  # ragged edges, small drips
    fade = np.linspace(rng.uniform(-0.6, 0.4), rng.uniform(-0.6, 0.4), h, dtype=np.float32)[:, None]
    threshold = np.float32(rng.uniform(0.6, 1.5))
    alpha = np.clip((field + fade - threshold) * np.float32(rng.uniform(1.5, 6.0)), 0.0, 1.0) * _taper(bw)
    depth = np.float32(np.exp(rng.uniform(np.log(5.0), np.log(60.0))) * look.contrast)
    img[:, x0 : x0 + bw] -= alpha * depth


def _wash(img: np.ndarray, rng: np.random.Generator, banks: NoiseBanks, lo: int, hi: int, look: Look) -> None:
    """A broad, ragged brighter area, where the sheet is cleaner or catches more light."""
    h = img.shape[0]
    bw = int(min(hi - lo, np.exp(rng.uniform(np.log(150), np.log(1600)))))
    x0 = int(rng.integers(lo, hi - bw + 1))
    small = crop(banks.smooth, rng, max(3, h // 40 + 2), max(3, bw // 40 + 2))
    field = cv2.resize(np.ascontiguousarray(small), (bw, h), interpolation=cv2.INTER_LINEAR)
    field += crop(banks.smooth, rng, h, bw) * np.float32(rng.uniform(0.1, 0.4))
    alpha = np.clip((field - np.float32(rng.uniform(-0.3, 1.0))) * np.float32(rng.uniform(1.0, 4.0)), 0.0, 1.0)
    alpha *= _taper(bw, 80.0)
    img[:, x0 : x0 + bw] += alpha * np.float32(np.exp(rng.uniform(np.log(10.0), np.log(70.0))) * look.contrast)


def _oil(img: np.ndarray, rng: np.random.Generator, banks: NoiseBanks, lo: int, hi: int) -> None:
    """A cluster of bright, often saturated oil blobs and splashes."""
    h = img.shape[0]
    w = hi - lo
    cx, cy = rng.uniform(lo + 10, hi - 10), rng.uniform(0, h)
    canvas = np.zeros((h, w), dtype=np.uint8)
    for _ in range(int(rng.integers(2, 14))):
        x = int(np.clip(cx + rng.normal(0, 40) - lo, 0, w - 1))
        y = int(np.clip(cy + rng.normal(0, 60), 0, h - 1))
        axes = (int(rng.integers(2, 12)), int(rng.integers(3, 20)))
        cv2.ellipse(canvas, (x, y), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_AA)
    blob = cv2.GaussianBlur(canvas, (0, 0), 1.0).astype(np.float32) * np.float32(rng.uniform(0.3, 1.0))
    blob *= 0.7 + 0.3 * crop(banks.smooth, rng, h, w)
    img[:, lo:hi] += blob


def _glints(img: np.ndarray, rng: np.random.Generator, lo: int, hi: int) -> None:
    """Small bright glints, round or drawn out along the rolling direction (some saturate)."""
    count = int(np.exp(rng.uniform(np.log(5.0), np.log(300.0))))
    h, w = img.shape[0], hi - lo
    ys, xs = rng.integers(0, h, count), rng.integers(0, w, count)
    grouped = rng.random(count) < 0.75
    centre = int(rng.integers(0, count))
    ys[grouped] = np.clip(ys[centre] + rng.normal(0, 60, grouped.sum()), 0, h - 1).astype(ys.dtype)
    xs[grouped] = np.clip(xs[centre] + rng.normal(0, 60, grouped.sum()), 0, w - 1).astype(xs.dtype)
    peaks = np.exp(rng.uniform(np.log(40.0), np.log(300.0), count))
    add_spots(img[:, lo:hi], ys, xs, peaks, sigma=rng.uniform(0.5, 1.1), sigma_y=rng.uniform(0.6, 3.0))


def _flecks(img: np.ndarray, rng: np.random.Generator, lo: int, hi: int, look: Look) -> None:
    """Tiny bright flecks, one or two pixels tall and a few wide, scattered over the sheet."""
    count = int(np.exp(rng.uniform(np.log(30.0), np.log(3000.0))))
    ys = rng.integers(0, img.shape[0], count)
    xs = rng.integers(lo, hi - 3, count)
    values = rng.uniform(10.0, 45.0, count).astype(np.float32) * np.float32(look.contrast)
    for dx, weight in ((0, 1.0), (1, 0.8), (2, 0.4)):
        np.add.at(img, (ys, xs + dx), values * np.float32(weight))


def _specks(img: np.ndarray, rng: np.random.Generator, lo: int, hi: int, look: Look) -> None:
    """Scattered dark specks, some in loose groups: like pits, but round and without a highlight."""
    count = int(rng.poisson(rng.uniform(3.0, 50.0)))
    if count == 0:
        return
    h, w = img.shape[0], hi - lo
    ys, xs = rng.integers(0, h, count), rng.integers(0, w, count)
    grouped = rng.random(count) < 0.4
    centre = int(rng.integers(0, count))
    ys[grouped] = np.clip(ys[centre] + rng.normal(0, 25, grouped.sum()), 0, h - 1).astype(ys.dtype)
    xs[grouped] = np.clip(xs[centre] + rng.normal(0, 40, grouped.sum()), 0, w - 1).astype(xs.dtype)
    depth = -rng.uniform(15.0, 55.0, count) * look.defect_contrast
    add_spots(img[:, lo:hi], ys, xs, depth, sigma=rng.uniform(0.7, 1.6))


def _lines(img: np.ndarray, rng: np.random.Generator, lo: int, hi: int, look: Look) -> None:
    """Long, even lines along the rolling direction: like marks and scratches, but straight and uniform."""
    h = img.shape[0]
    ys = np.arange(h, dtype=np.float32)
    for _ in range(int(rng.integers(0, 6))):
        width = rng.uniform(0.6, 2.5)
        x0 = rng.uniform(lo + 4, hi - 4)
        cols = np.arange(max(lo, int(x0) - 8), min(hi, int(x0) + 9))
        if cols.size == 0:
            continue
        start = rng.uniform(-h, h * 0.3)
        stop = start + rng.uniform(1.2 * h, 3.0 * h)
        envelope = np.clip(np.minimum(ys - start, stop - ys) / 20.0, 0.0, 1.0)
        profile = np.exp(-(((cols[None, :] - x0) / width) ** 2))
        amp = rng.uniform(6.0, 35.0) * look.defect_contrast * (1.0 if rng.random() < 0.45 else -1.0)
        img[:, cols[0] : cols[-1] + 1] += profile * (envelope * amp)[:, None]


def _roll_marks(img: np.ndarray, rng: np.random.Generator, lo: int, hi: int, look: Look) -> None:
    """Faint transverse marks left by a roll: thin horizontal bands over much of the sheet's width."""
    h = img.shape[0]
    for _ in range(int(rng.integers(1, 5))):
        y = rng.uniform(0, h)
        rows = np.arange(max(0, int(y) - 8), min(h, int(y) + 9))
        if rows.size == 0:
            continue
        span = int(rng.uniform(0.3, 1.0) * (hi - lo))
        x0 = int(rng.integers(lo, hi - span + 1))
        profile = np.exp(-(((rows - y) / rng.uniform(0.8, 4.0)) ** 2)).astype(np.float32)
        amp = np.float32(rng.uniform(4.0, 16.0) * look.contrast * (1.0 if rng.random() < 0.5 else -1.0))
        img[rows[0] : rows[-1] + 1, x0 : x0 + span] += (profile * amp)[:, None]


def add_distractors(
    img: np.ndarray, rng: np.random.Generator, banks: NoiseBanks, columns: tuple[int, int], look: Look
) -> None:
    """Draw defect look-alikes on ``img`` ``(H, W)`` float32 in place, within ``columns`` ``[lo, hi)``."""
    lo, hi = columns
    if hi - lo < 40:
        return
    for _ in range(int(rng.choice(4, p=(0.4, 0.3, 0.2, 0.1)))):
        _stains(img, rng, banks, lo, hi, look)
    if rng.random() < 0.55:
        _wash(img, rng, banks, lo, hi, look)
    if rng.random() < 0.12:
        _oil(img, rng, banks, lo, hi)
    if rng.random() < 0.9:
        _glints(img, rng, lo, hi)
    _specks(img, rng, lo, hi, look)
    _flecks(img, rng, lo, hi, look)
    _lines(img, rng, lo, hi, look)
    if rng.random() < 0.15:
        _roll_marks(img, rng, lo, hi, look)
