"""Defect-free steel background: uneven light, vertical rolling streaks, grain, and the sheet's edge band."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cascade.synth.noise import NoiseBanks, crop

__all__ = ["Sheet", "apply_edge_band", "render_background", "sample_sheet"]

_BAND_WIDTH = (50.0, 1300.0)  # log-uniform; the sheet keeps at least 300 columns
_RIM = 6  # columns next to the band kept free of defects


@dataclass(frozen=True)
class Sheet:
    """Where the steel sheet is in the image: columns ``[x0, x1)``; the rest is the black edge band.

    Attributes:
        x0: first sheet column.
        x1: one past the last sheet column.
        width: image width.
    """

    x0: int
    x1: int
    width: int

    @property
    def has_band(self) -> bool:
        """Whether part of the image is past the sheet's edge."""
        return self.x0 > 0 or self.x1 < self.width

    @property
    def usable(self) -> tuple[int, int]:
        """Columns ``[lo, hi)`` where defects may be drawn (the sheet minus a rim next to the band)."""
        lo = self.x0 + _RIM if self.x0 > 0 else 0
        hi = self.x1 - _RIM if self.x1 < self.width else self.width
        return lo, hi


def sample_sheet(rng: np.random.Generator, width: int, band_prob: float) -> Sheet:
    """Decide whether the image shows the sheet's edge (with probability ``band_prob``) and where."""
    if rng.random() >= band_prob:
        return Sheet(0, width, width)
    band = int(np.exp(rng.uniform(np.log(_BAND_WIDTH[0]), np.log(_BAND_WIDTH[1]))))
    if rng.random() < 0.5:
        return Sheet(band, width, width)
    return Sheet(0, width - band, width)


def render_background(rng: np.random.Generator, banks: NoiseBanks, shape: tuple[int, int]) -> np.ndarray:
    """A clean steel surface.

    Args:
        rng: per-image random generator.
        banks: precomputed noise.
        shape: ``(H, W)``.

    Returns:
        ``(H, W)`` float32 gray levels (roughly 40..220, not yet clipped).
    """
    height, width = shape
    level = rng.uniform(75.0, 145.0)
    # Uneven light: mostly across the sheet (x), gently along it (y).
    coarse = rng.standard_normal((int(rng.integers(2, 4)), int(rng.integers(4, 15)))).astype(np.float32)
    coarse *= rng.uniform(5.0, 18.0)
    light = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    # Bright and dark bands along the rolling direction, at two scales.
    bands = np.zeros(width, dtype=np.float32)
    for period, amp in ((int(rng.integers(60, 250)), rng.uniform(4.0, 12.0)), (int(rng.integers(6, 25)), 2.0)):
        knots = rng.standard_normal(width // period + 2).astype(np.float32) * amp
        bands += cv2.resize(knots[None, :], (width, 1), interpolation=cv2.INTER_LINEAR)[0]
    img = light
    img += (bands + np.float32(level))[None, :]
    # Whole-image layers: unflipped crops (positive strides) so OpenCV adds them in one pass.
    cv2.scaleAdd(crop(banks.streak, rng, height, width, flip=False), rng.uniform(1.5, 4.5), img, dst=img)
    cv2.scaleAdd(crop(banks.fine, rng, height, width, flip=False), rng.uniform(5.0, 9.0), img, dst=img)
    mottle = crop(banks.smooth, rng, height // 12 + 2, width // 3 + 2)  # features ~36 px tall, ~9 px wide
    mottle = cv2.resize(np.ascontiguousarray(mottle), (width, height), interpolation=cv2.INTER_LINEAR)
    cv2.scaleAdd(mottle, rng.uniform(1.5, 4.5), img, dst=img)
    if rng.random() < 0.3:  # broad glare along the rolling direction, fading in or out along it
        xs = np.arange(width, dtype=np.float32)
        across = np.exp(-(((xs - rng.uniform(0, width)) / rng.uniform(40.0, 250.0)) ** 2))
        along = np.linspace(rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0), height, dtype=np.float32)
        cols = np.flatnonzero(across > 1e-3)
        if cols.size:
            lo, hi = int(cols[0]), int(cols[-1]) + 1
            img[:, lo:hi] += np.outer(along * rng.uniform(15.0, 45.0), across[lo:hi])
    if rng.random() < 0.5:  # fine horizontal roll pattern seen on many sheets
        rows = np.arange(height, dtype=np.float32)
        ripple = np.sin(rows * (2 * np.pi / rng.uniform(2.5, 6.0)) + rng.uniform(0, 2 * np.pi))
        img += (ripple * rng.uniform(1.0, 3.0)).astype(np.float32)[:, None]
    return img


def apply_edge_band(img: np.ndarray, sheet: Sheet, rng: np.random.Generator, banks: NoiseBanks) -> None:
    """Paint the dark area past the sheet's edge, with a thin rim, over ``img`` ``(H, W)`` in place."""
    if not sheet.has_band:
        return
    height = img.shape[0]
    if sheet.x0 > 0:
        band = slice(0, sheet.x0)
        rim = slice(sheet.x0, min(sheet.x0 + 4, sheet.width))
    else:
        band = slice(sheet.x1, sheet.width)
        rim = slice(max(sheet.x1 - 4, 0), sheet.x1)
    band_w = band.stop - band.start
    img[:, band] = rng.uniform(4.0, 16.0) + crop(banks.fine, rng, height, band_w) * 1.2
    img[:, rim] = img[:, rim] * rng.uniform(0.55, 0.85)
