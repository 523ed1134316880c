"""Patterned (tread) plate: a diamond lattice of raised ribs, or staggered lentil-shaped bumps, lit from one side.

A few percent of real Severstal images show such plate; its ribs are sharp, high-contrast and regular, and
no defect. Drawn before lighting, over the background, with relief (a bright flank and a dark flank).
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["render_plate"]


def _relief(d: np.ndarray, width: float, amp: float) -> np.ndarray:
    """A raised rib across signed distance ``d`` (px): bright flank, dark flank, brighter crest."""
    z = d / np.float32(width)
    bump = np.exp(-z * z)
    return np.float32(amp) * (-1.7 * z * bump + 0.35 * bump)


def _diamond(img: np.ndarray, rng: np.random.Generator) -> None:
    height, width = img.shape
    period = rng.uniform(70.0, 120.0)
    slope = period / (2.0 * rng.uniform(90.0, 150.0))  # diamonds taller than wide, as on the real plate
    rib = rng.uniform(3.0, 6.0)
    amp = rng.uniform(25.0, 55.0)
    xs = np.arange(width, dtype=np.float32)[None, :] + np.float32(rng.uniform(0, period))
    ys = np.arange(height, dtype=np.float32)[:, None] * np.float32(slope)
    half = np.float32(period / 2)
    for sign in (1.0, -1.0):
        d = np.mod(xs + np.float32(sign) * ys + half, np.float32(period)) - half
        img += _relief(d, rib, amp)


def _lentil_sprite(angle: float, length: int, thickness: int, amp: float) -> np.ndarray:
    size = 2 * length + 8
    canvas = np.zeros((size, size), dtype=np.uint8)
    cv2.ellipse(canvas, (size // 2, size // 2), (length, thickness), angle, 0, 360, 255, -1, cv2.LINE_AA)
    bump = cv2.GaussianBlur(canvas.astype(np.float32) / 255.0, (0, 0), 1.5)
    gy, gx = np.gradient(bump)
    return (-(gx + gy) * 2.5 + 0.3 * bump) * np.float32(amp)


def _lentils(img: np.ndarray, rng: np.random.Generator) -> None:
    height, width = img.shape
    length, thickness = int(rng.integers(14, 24)), int(rng.integers(4, 8))
    amp = rng.uniform(40.0, 90.0)
    tilt = rng.uniform(30.0, 55.0)
    sprites = (_lentil_sprite(tilt, length, thickness, amp), _lentil_sprite(-tilt, length, thickness, amp))
    step_x, step_y = rng.uniform(70.0, 100.0), rng.uniform(45.0, 70.0)
    off_x, off_y = rng.uniform(0, step_x), rng.uniform(0, step_y)
    size = sprites[0].shape[0]
    for row, y in enumerate(np.arange(off_y - step_y, height + step_y, step_y)):
        for col, x in enumerate(np.arange(off_x - step_x + (row % 2) * step_x / 2, width + step_x, step_x)):
            sprite = sprites[(row + col) % 2]
            y0, x0 = int(y) - size // 2, int(x) - size // 2
            ya, xa = max(y0, 0), max(x0, 0)
            yb, xb = min(y0 + size, height), min(x0 + size, width)
            if yb > ya and xb > xa:
                img[ya:yb, xa:xb] += sprite[ya - y0 : yb - y0, xa - x0 : xb - x0]


def render_plate(img: np.ndarray, rng: np.random.Generator, kind: str) -> None:
    """Draw a tread pattern of ``kind`` (``"diamond"`` or ``"lentil"``) onto ``img`` ``(H, W)`` float32 in place."""
    if kind == "diamond":
        _diamond(img, rng)
    elif kind == "lentil":
        _lentils(img, rng)
    else:
        raise ValueError(f"unknown plate pattern {kind!r}; allowed: 'diamond', 'lentil'")
