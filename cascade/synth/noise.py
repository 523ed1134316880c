"""Precomputed noise banks that the generator crops textures from, so no image pays for filtering noise.

The banks are built once per process from a fixed seed (so every worker holds the same banks and the
output depends only on the dataset seed); an image takes randomly placed, randomly flipped crops.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["NoiseBanks", "crop", "noise_banks"]

_BANK_SEED = 20190726  # fixed: banks are part of the generator, not of a dataset
_BANK_SHAPE = (640, 2304)


@dataclass(frozen=True)
class NoiseBanks:
    """Unit-variance float32 noise fields, each ``(640, 2304)``.

    Attributes:
        white: pixel noise (uncorrelated), the camera's grain.
        fine: isotropic grain (correlation length ~1 px).
        smooth: isotropic blobs (~3 px); resized up to make ragged region edges at any scale.
        streak: vertically elongated noise (~1 px wide, ~12 px tall), the rolling-direction texture.
        cross: horizontally elongated noise (~6 px wide, ~1 px tall), the transverse roll texture.
    """

    white: np.ndarray
    fine: np.ndarray
    smooth: np.ndarray
    streak: np.ndarray
    cross: np.ndarray


def _normalized(field: np.ndarray) -> np.ndarray:
    field = field - field.mean()
    return (field / field.std()).astype(np.float32)


@functools.cache
def noise_banks() -> NoiseBanks:
    """The process-wide noise banks (built on first use, ~0.1 s)."""
    rng = np.random.default_rng(_BANK_SEED)
    fields = [rng.standard_normal(_BANK_SHAPE, dtype=np.float32) for _ in range(5)]
    fine = cv2.GaussianBlur(fields[0], (0, 0), sigmaX=0.7, borderType=cv2.BORDER_REFLECT)
    smooth = cv2.GaussianBlur(fields[1], (0, 0), sigmaX=3.0, borderType=cv2.BORDER_REFLECT)
    streak = cv2.GaussianBlur(fields[2], (0, 0), sigmaX=0.8, sigmaY=12.0, borderType=cv2.BORDER_REFLECT)
    cross = cv2.GaussianBlur(fields[4], (0, 0), sigmaX=6.0, sigmaY=0.7, borderType=cv2.BORDER_REFLECT)
    return NoiseBanks(
        white=_normalized(fields[3]),
        fine=_normalized(fine),
        smooth=_normalized(smooth),
        streak=_normalized(streak),
        cross=_normalized(cross),
    )


def crop(bank: np.ndarray, rng: np.random.Generator, height: int, width: int, *, flip: bool = True) -> np.ndarray:
    """A randomly placed, randomly flipped ``(height, width)`` view of ``bank`` (tiled when larger).

    Args:
        bank: ``(Hb, Wb)`` noise field.
        rng: source of the placement.
        height: rows wanted.
        width: columns wanted.
        flip: also flip at random (a flipped view is slower to read; whole-image layers skip it).

    Returns:
        ``(height, width)`` float32 array (a view when it fits in the bank; do not write to it).
    """
    bank_h, bank_w = bank.shape
    if height > bank_h or width > bank_w:
        reps = (-(-height // bank_h), -(-width // bank_w))
        bank = np.tile(bank, reps)
        bank_h, bank_w = bank.shape
    y0 = int(rng.integers(0, bank_h - height + 1))
    x0 = int(rng.integers(0, bank_w - width + 1))
    view = bank[y0 : y0 + height, x0 : x0 + width]
    if not flip:
        return view
    flips = int(rng.integers(0, 4))
    if flips & 1:
        view = view[::-1]
    if flips & 2:
        view = view[:, ::-1]
    return view
