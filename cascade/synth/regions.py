"""Defect regions: blob-shaped masks of an exact pixel area, and the soft 'ink' inside them.

A region is the thresholded field ``1 - d(x, y) + roughness * noise`` over a bounding box, where ``d``
is a superellipse distance from the box centre (the base shape fills the inner 80% of the box); the
threshold is picked so that exactly ``area`` pixels are set. Defect looks are then drawn with an alpha
that fades in a little inside the mask edge, so the ground truth is a slightly dilated, smooth region
around what is visible (as in Severstal).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cascade.synth.noise import NoiseBanks, crop

__all__ = ["RegionShape", "blob_mask", "inner_alpha"]

_MARGIN = 1.25  # box half-size in units of the base shape's half-size


@dataclass(frozen=True)
class RegionShape:
    """How a region's outline looks.

    Attributes:
        exponent: superellipse exponent of the base shape (2 = ellipse, 8 ≈ rounded rectangle).
        roughness: amplitude of the noise added to the distance field (0 = smooth outline).
        grain: size in pixels of one noise feature along the outline.
        span_y: vertical half-extent of the base shape in box units; < 1 lets the shape run off the
            box's top and bottom (a band along the rolling direction).
    """

    exponent: float = 2.0
    roughness: float = 0.2
    grain: float = 8.0
    span_y: float = 1.0


def blob_mask(
    rng: np.random.Generator, banks: NoiseBanks, area: int, box: tuple[int, int], shape: RegionShape
) -> np.ndarray:
    """A region of ``area`` pixels (fewer if the box is too small) inside a box.

    Args:
        rng: per-image random generator.
        banks: precomputed noise.
        area: pixels wanted.
        box: ``(bh, bw)`` of the bounding box.
        shape: outline parameters.

    Returns:
        ``(bh, bw)`` bool mask.
    """
    bh, bw = box
    n = bh * bw
    if area >= n:
        return np.ones(box, dtype=bool)
    # The base shape spans the inner 1/_MARGIN of the box and the noise fades out towards the box edges,
    # so a ragged outline is never cut straight by the box (except along y for bands, span_y < 1).
    margin_y = _MARGIN if shape.span_y >= 1.0 else 1.0
    ys = np.abs(np.linspace(-margin_y, margin_y, bh, dtype=np.float32)) / shape.span_y
    xs = np.abs(np.linspace(-_MARGIN, _MARGIN, bw, dtype=np.float32))
    p = shape.exponent
    dist = (xs[None, :] ** p + ys[:, None] ** p) ** (1.0 / p)
    field = 1.0 - dist
    if shape.roughness > 0:
        scale = 3.0 / max(shape.grain, 1.0)  # the smooth bank's features are ~3 px
        small = crop(banks.smooth, rng, max(2, int(bh * scale) + 2), max(2, int(bw * scale) + 2))
        noise = cv2.resize(np.ascontiguousarray(small), (bw, bh), interpolation=cv2.INTER_LINEAR)
        taper = np.clip((_MARGIN - np.maximum(xs[None, :], ys[:, None] * shape.span_y)) * 2.5, 0.0, 1.0)
        field += noise * taper * shape.roughness
    flat = field.ravel()
    threshold = np.partition(flat, n - area)[n - area]
    mask = field >= threshold
    return _drop_specks(mask, max(12, area // 40))


def _drop_specks(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
    if count <= 2:
        return mask
    small = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] < min_pixels) + 1
    if small.size == 0:
        return mask
    return mask & ~np.isin(labels, small)


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
