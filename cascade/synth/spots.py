"""Round and elongated Gaussian spots: the pits of class 1, and the specks and glints of the look-alikes."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["add_spots", "gaussian_spots"]


def _peak(sigma: float, sigma_y: float) -> float:
    kx = cv2.getGaussianKernel(2 * int(np.ceil(3 * sigma)) + 1, sigma)
    ky = cv2.getGaussianKernel(2 * int(np.ceil(3 * sigma_y)) + 1, sigma_y)
    return float(kx.max()) * float(ky.max())


def gaussian_spots(
    shape: tuple[int, int], flat_idx: np.ndarray, weights: np.ndarray, sigma: float, sigma_y: float | None = None
) -> np.ndarray:
    """Spots of peak ``weights`` centred at flat pixel indices ``flat_idx`` of a ``shape`` box.

    Args:
        shape: ``(h, w)`` of the box.
        flat_idx: ``(n,)`` row-major pixel indices of the spot centres.
        weights: ``(n,)`` peak value of each spot.
        sigma: Gaussian width in pixels.
        sigma_y: vertical width when different (elongated spots).

    Returns:
        ``(h, w)`` float32 (overlapping spots add up).
    """
    sigma_y = sigma if sigma_y is None else sigma_y
    impulses = np.bincount(flat_idx, weights=weights, minlength=shape[0] * shape[1]).astype(np.float32)
    blurred = cv2.GaussianBlur(
        impulses.reshape(shape), (0, 0), sigmaX=sigma, sigmaY=sigma_y, borderType=cv2.BORDER_CONSTANT
    )
    return blurred * np.float32(1.0 / _peak(sigma, sigma_y))


def add_spots(
    img: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    weights: np.ndarray,
    sigma: float,
    sigma_y: float | None = None,
) -> None:
    """Add a few Gaussian spots of peak ``weights`` at pixels ``(ys, xs)`` to ``img`` ``(h, w)`` in place.

    Stamps each spot's footprint instead of filtering the whole image, so it is cheap for sparse spots.
    """
    sigma_y = sigma if sigma_y is None else sigma_y
    ry, rx = int(np.ceil(3 * sigma_y)), int(np.ceil(3 * sigma))
    dy, dx = np.arange(-ry, ry + 1), np.arange(-rx, rx + 1)
    kernel = np.exp(-0.5 * (dy / sigma_y) ** 2)[:, None] * np.exp(-0.5 * (dx / sigma) ** 2)[None, :]
    rows = np.asarray(ys)[:, None, None] + dy[None, :, None]
    cols = np.asarray(xs)[:, None, None] + dx[None, None, :]
    rows, cols = np.broadcast_arrays(rows, cols)
    values = np.asarray(weights, dtype=np.float32)[:, None, None] * kernel[None].astype(np.float32)
    inside = (rows >= 0) & (rows < img.shape[0]) & (cols >= 0) & (cols < img.shape[1])
    np.add.at(img, (rows[inside], cols[inside]), values[inside])
