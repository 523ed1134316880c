"""Defect-free steel: surface texture, the camera's lighting, and the dark band past the sheet's edge.

``render_background`` draws the sheet before lighting (gray level plus texture, additive); ``apply_lighting``
then multiplies everything drawn on it by the real camera's light: brighter towards the bottom (1.1-2.2x
from the top row to the bottom one on the real images) and unevenly across; ``apply_edge_band`` paints
what lies past the sheet's edge last.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cascade.synth.look import Look
from cascade.synth.noise import NoiseBanks, crop

__all__ = ["Sheet", "apply_edge_band", "apply_lighting", "render_background", "sample_sheet"]

_BAND_WIDTH = (50.0, 1300.0)  # log-uniform; the sheet keeps at least 300 columns
_RIM = 2  # columns next to the band kept free of defects


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
        """Columns ``[lo, hi)`` where defects may be drawn (the sheet minus a thin rim next to the band)."""
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


def _profile(rng: np.random.Generator, n: int, knots: int) -> np.ndarray:
    """A smooth random ``(n,)`` profile with about ``knots`` features, unit-ish amplitude."""
    values = rng.standard_normal(knots + 2).astype(np.float32)
    return cv2.resize(values[None, :], (n, 1), interpolation=cv2.INTER_CUBIC)[0]


def render_background(rng: np.random.Generator, banks: NoiseBanks, shape: tuple[int, int], look: Look) -> np.ndarray:
    """A clean steel surface before lighting.

    Args:
        rng: per-image random generator.
        banks: precomputed noise.
        shape: ``(H, W)``.
        look: the image's look (gray level, contrast, texture).

    Returns:
        ``(H, W)`` float32 gray levels around ``look.level`` (not yet lit or clipped).
    """
    height, width = shape
    c = look.contrast
    # Bright and dark bands along the rolling direction, at two scales.
    bands = _profile(rng, width, int(rng.integers(6, 30))) * np.float32(np.exp(rng.uniform(1.1, 3.2)) * c)
    bands += _profile(rng, width, int(rng.integers(60, 260))) * np.float32(rng.uniform(0.5, 2.5) * c)
    img = np.empty(shape, dtype=np.float32)
    img[:] = bands + np.float32(look.level)
    # Whole-image layers: unflipped crops (positive strides) so OpenCV adds them in one pass.
    cv2.scaleAdd(crop(banks.white, rng, height, width, flip=False), rng.uniform(3.0, 5.5) * c, img, dst=img)
    cv2.scaleAdd(crop(banks.streak, rng, height, width, flip=False), rng.uniform(0.7, 2.2) * c, img, dst=img)
    cv2.scaleAdd(crop(banks.fine, rng, height, width, flip=False), rng.uniform(1.5, 4.0) * c, img, dst=img)
    cv2.scaleAdd(crop(banks.cross, rng, height, width, flip=False), rng.uniform(1.0, 3.5) * c, img, dst=img)
    if look.texture == "peel":  # isotropic orange-peel mottling, features ~10 px (never in the training profiles)
        peel = crop(banks.smooth, rng, height // 3 + 2, width // 3 + 2)
        peel = cv2.resize(np.ascontiguousarray(peel), (width, height), interpolation=cv2.INTER_LINEAR)
        cv2.scaleAdd(peel, rng.uniform(5.0, 8.0) * c, img, dst=img)
    else:  # soft mottling drawn out along the rolling direction, features ~40 px tall and ~10 px wide
        mottle = crop(banks.smooth, rng, height // 12 + 2, width // 3 + 2)
        mottle = cv2.resize(np.ascontiguousarray(mottle), (width, height), interpolation=cv2.INTER_LINEAR)
        cv2.scaleAdd(mottle, rng.uniform(0.5, 2.5) * c, img, dst=img)
    if rng.random() < 0.8:  # fine transverse roll texture seen on most sheets
        rows = np.arange(height, dtype=np.float32)
        ripple = np.sin(rows * (2 * np.pi / rng.uniform(2.5, 7.0)) + rng.uniform(0, 2 * np.pi))
        img += (ripple * rng.uniform(1.0, 4.0) * c).astype(np.float32)[:, None]
    if rng.random() < 0.5:  # broad sheen across the sheet, often diagonal
        xs = np.arange(width, dtype=np.float32)
        centre = rng.uniform(0, width) + rng.uniform(-0.8, 0.8) * (np.arange(height, dtype=np.float32) - height / 2)
        sheen = np.exp(-(((xs[None, :] - centre[:, None]) / rng.uniform(40.0, 300.0)) ** 2))
        img += sheen * np.float32(rng.uniform(10.0, 60.0) * (1.0 if rng.random() < 0.8 else -0.6))
    return img


def apply_lighting(img: np.ndarray, rng: np.random.Generator, look: Look) -> None:
    """Multiply ``img`` ``(H, W)`` in place by the camera's light: a top-to-bottom ramp and a smooth
    left-to-right variation, normalised so that the median gray level stays about ``look.level``."""
    height, width = img.shape
    t = np.linspace(0.0, 1.0, height, dtype=np.float32) ** np.float32(look.ramp_gamma)
    gain = 1.0 + np.float32(look.ramp - 1.0) * t
    gain /= np.float32(np.median(gain))
    across = 1.0 + np.float32(look.across) * np.tanh(_profile(rng, width, int(rng.integers(2, 8))))
    img *= gain[:, None]
    img *= across[None, :]


def apply_edge_band(img: np.ndarray, sheet: Sheet, rng: np.random.Generator, banks: NoiseBanks) -> None:
    """Paint the dark area past the sheet's edge, with a dark or bright rim, over ``img`` ``(H, W)`` in place."""
    if not sheet.has_band:
        return
    height = img.shape[0]
    if sheet.x0 > 0:
        band = slice(0, sheet.x0)
        edge, inward = sheet.x0, 1
    else:
        band = slice(sheet.x1, sheet.width)
        edge, inward = sheet.x1, -1
    band_w = band.stop - band.start
    img[:, band] = rng.uniform(2.0, 14.0) + crop(banks.fine, rng, height, band_w) * rng.uniform(0.6, 1.8)
    kind = rng.random()
    if kind < 0.5:  # a thin dark rim
        rim_w = int(rng.integers(2, 6))
        factor = rng.uniform(0.45, 0.8)
    elif kind < 0.8:  # a bright, rough strip where the edge catches the light
        rim_w = int(rng.integers(4, 30))
        factor = rng.uniform(1.15, 1.7)
    else:
        return
    lo, hi = (edge, edge + rim_w) if inward > 0 else (edge - rim_w, edge)
    lo, hi = max(lo, 0), min(hi, sheet.width)
    if hi > lo:
        rough = 1.0 + 0.15 * crop(banks.streak, rng, height, hi - lo)
        img[:, lo:hi] *= np.float32(factor) * rough
