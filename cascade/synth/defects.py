"""How each defect class looks: one renderer per class, drawing inside a real, loose polygon mask.

Every renderer takes the mask's bounding box of the image ``img`` ``(h, w)`` float32 (a view, changed in
place), the ``mask`` ``(h, w)`` bool, the random generator, the noise banks and ``strength`` (the image's
defect contrast factor), and only changes pixels inside the mask. As in the real labels, the polygon is
loose: what is visible covers only part of it. Looks follow the real images:

- class 1: a few small pits, each a dark dent with a bright lip, or tall narrow slivers (often at the edge);
- class 2: one or two nearly invisible thin lines along the rolling direction;
- class 3: scratches along the region's main axis (diagonal ones too), each a bright highlight beside a dark
  groove, sometimes a wide dark groove or a bright, saturated scuff;
- class 4: a dark blotch with ragged edges, relief, cracks and sometimes a bright rim; some barely darker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import cv2
import numpy as np

from cascade.synth.noise import NoiseBanks, crop
from cascade.synth.regions import inner_alpha
from cascade.synth.spots import add_spots

__all__ = ["RENDERERS", "Renderer", "render_blotches", "render_marks", "render_pits", "render_scratches"]

Renderer = Callable[[np.ndarray, np.ndarray, np.random.Generator, NoiseBanks, float], None]
"""``render(img (h, w) float32, mask (h, w) bool, rng, banks, strength)``: draws one class's regions in place."""


def _components(mask: np.ndarray) -> Iterator[tuple[tuple[slice, slice], np.ndarray]]:
    """``(window, component mask in the window)`` for each 8-connected component of ``mask``."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
    for label in range(1, count):
        x, y, w, h, _area = stats[label]
        window = (slice(y, y + h), slice(x, x + w))
        yield window, labels[window] == label


def _centre_line(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``mask``: whether it has pixels, their mean column, and half their count."""
    count = mask.sum(axis=1).astype(np.float32)
    xs = np.arange(mask.shape[1], dtype=np.float32)
    centre = (mask * xs[None, :]).sum(axis=1) / np.maximum(count, 1.0)
    return count > 0, centre, 0.5 * count


def _along(rng: np.random.Generator, banks: NoiseBanks, n: int, floor: float) -> np.ndarray:
    """A slowly varying ``(n,)`` factor in ``[floor, 1]`` along a line."""
    small = np.ascontiguousarray(crop(banks.smooth, rng, max(2, n // 12 + 2), 1))
    wave = cv2.resize(small, (1, n), interpolation=cv2.INTER_LINEAR)[:, 0]
    return np.clip(floor + (1.0 - floor) * (0.6 + 0.4 * wave), floor, 1.0).astype(np.float32)


def _line_field(
    mask: np.ndarray, rows: np.ndarray, centre: np.ndarray, sigma: float, offset: float = 0.0
) -> np.ndarray:
    """``(h, w)`` Gaussian ridge of width ``sigma`` along ``centre + offset`` on the rows where ``rows``."""
    xs = np.arange(mask.shape[1], dtype=np.float32)
    ridge = np.exp(-(((xs[None, :] - (centre + offset)[:, None]) / np.float32(sigma)) ** 2))
    ridge[~rows] = 0.0
    return ridge


def render_pits(
    img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, banks: NoiseBanks, strength: float
) -> None:
    """Class 1: per region a few small pits (dark dent, bright lip above), or a tall narrow sliver."""
    for window, comp in _components(mask):
        h, w = comp.shape
        sub = img[window]
        if h >= 2.5 * w and h >= 24:  # a sliver along the rolling direction
            rows, centre, half = _centre_line(comp)
            sigma = float(max(1.0, 0.45 * np.median(half[rows])))
            along = _along(rng, banks, h, 0.3)
            amp = rng.uniform(35.0, 90.0) * strength * (-1.0 if rng.random() < 0.65 else 1.0)
            sub += _line_field(comp, rows, centre, sigma) * (along * amp)[:, None] * comp
            if rng.random() < 0.5:
                side = sigma * rng.choice((-1.5, 1.5))
                sub += _line_field(comp, rows, centre, 0.8, side) * (along * -amp * 0.6)[:, None] * comp
            continue
        core = np.flatnonzero(inner_alpha(comp, rng, banks, inset=1.0, soft=2.0) > 0.5)
        core = core if core.size else np.flatnonzero(comp)
        alpha = inner_alpha(comp, rng, banks, inset=1.0, soft=4.0, jag=1.5)
        sub -= alpha * np.float32(rng.uniform(2.0, 12.0) * strength)  # faint stain
        count = int(min(6, 1 + rng.poisson(comp.sum() / 700.0)))
        spots = np.zeros(comp.shape, dtype=np.float32)
        for idx in rng.choice(core, count):
            y, x = divmod(int(idx), w)
            sx = rng.uniform(0.8, 2.2)
            sy = sx * rng.uniform(1.0, 3.5)
            add_spots(spots, [y], [x], [-rng.uniform(30.0, 95.0) * strength], sigma=sx, sigma_y=sy)
            if rng.random() < 0.6:
                lip = max(y - round(1.6 * sy), 0)
                add_spots(spots, [lip], [x], [rng.uniform(30.0, 120.0) * strength], sigma=0.8 * sx, sigma_y=0.6 * sy)
        sub += spots * comp


def render_marks(
    img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, banks: NoiseBanks, strength: float
) -> None:
    """Class 2: one or two thin, faint lines along the region's length (nearly invisible, as in the real data)."""
    for window, comp in _components(mask):
        h = comp.shape[0]
        rows, centre, _half = _centre_line(comp)
        centre = centre + rng.normal(0.0, 0.6) * np.linspace(-1.0, 1.0, h, dtype=np.float32)
        along = _along(rng, banks, h, 0.4)
        keep = np.ones(h, dtype=bool)
        if rng.random() < 0.5:  # visible over part of the region only
            a, b = np.sort(rng.integers(0, h, 2))
            keep[:] = False
            keep[a : max(b, a + h // 3)] = True
        amp = rng.uniform(18.0, 40.0) * strength * (-1.0 if rng.random() < 0.75 else 1.0)
        field = _line_field(comp, rows & keep, centre, rng.uniform(0.7, 1.5)) * (along * amp)[:, None]
        if rng.random() < 0.3:
            field += _line_field(comp, rows & keep, centre, 0.7, rng.uniform(2.0, 4.0)) * (along * amp * 0.6)[:, None]
        img[window] += field * comp


def _axis(comp: np.ndarray) -> tuple[float, float, float]:
    """Direction ``(dx, dy)`` of a component's main axis (unit) and its length in pixels."""
    ys, xs = np.nonzero(comp)
    if xs.size < 3:
        return 0.0, 1.0, float(comp.shape[0])
    cov = np.cov(np.stack([xs, ys]).astype(np.float64))
    values, vectors = np.linalg.eigh(cov)
    dx, dy = vectors[:, 1]
    return float(dx), float(dy), float(4.0 * np.sqrt(max(values[1], 1.0)))


def render_scratches(
    img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, banks: NoiseBanks, strength: float
) -> None:
    """Class 3: scratches along each region's main axis: bright highlights beside dark grooves."""
    for window, comp in _components(mask):
        h, w = comp.shape
        alpha = inner_alpha(comp, rng, banks, inset=rng.uniform(0.5, 3.0), soft=2.0, jag=1.5)
        core = np.flatnonzero(alpha > 0.5)
        if core.size == 0:
            continue
        sub = img[window]
        dx, dy, length = _axis(comp)
        area = int(comp.sum())
        tone = crop(banks.streak, rng, h, w) * np.float32(rng.uniform(5.0, 20.0))
        sub += alpha * (tone + np.float32(rng.uniform(-15.0, 20.0) * strength))  # the rubbed band itself
        kind = rng.random()
        if kind < 0.25:  # a wide dark groove along the region
            rows, centre, half = _centre_line(comp)
            ridge = _line_field(comp, rows, centre, float(max(1.5, 0.5 * np.median(half[rows]))))
            sub -= ridge * alpha * np.float32(rng.uniform(15.0, 50.0) * strength)
        elif kind < 0.55:  # a bright, scuffed patch
            rub = np.clip(0.2 + crop(banks.streak, rng, h, w) + 0.5 * crop(banks.fine, rng, h, w), 0.0, None)
            sub += alpha * rub * np.float32(rng.uniform(30.0, 120.0) * strength)
        highlight = np.zeros((h, w), dtype=np.uint8)
        groove = np.zeros((h, w), dtype=np.uint8)
        n_lines = int(np.clip(1 + area / rng.uniform(400.0, 1500.0), 1, 40))
        for _ in range(n_lines):
            y, x = divmod(int(rng.choice(core)), w)
            angle = np.arctan2(dy, dx) + rng.normal(0.0, 0.5 if rng.random() < 0.15 else 0.04)
            ux, uy = np.cos(angle), np.sin(angle)
            half_len = 0.5 * length * rng.uniform(0.2, 1.0)
            a = (int(x - ux * half_len), int(y - uy * half_len))
            b = (int(x + ux * half_len), int(y + uy * half_len))
            gap = rng.choice((1.0, 2.0))
            ox, oy = round(-uy * gap), round(ux * gap)  # the groove runs beside the highlight
            thick = 1 if rng.random() < 0.6 else 2
            if rng.random() < 0.7:
                cv2.line(highlight, a, b, int(rng.integers(90, 256)), thick, cv2.LINE_AA)
            b2 = (b[0] + ox, b[1] + oy)
            cv2.line(groove, (a[0] + ox, a[1] + oy), b2, int(rng.integers(90, 256)), thick, cv2.LINE_AA)
        scale = alpha * np.float32(strength / 255.0)
        sub += highlight.astype(np.float32) * scale * np.float32(rng.uniform(60.0, 180.0))
        sub -= groove.astype(np.float32) * scale * np.float32(rng.uniform(20.0, 60.0))


def _cracks(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    canvas = np.zeros((h, w), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        steps = int(rng.integers(6, 30))
        angles = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.6, steps))
        lengths = rng.uniform(3.0, 10.0, steps)
        x = rng.uniform(0, w) + np.cumsum(np.cos(angles) * lengths)
        y = rng.uniform(0, h) + np.cumsum(np.sin(angles) * lengths)
        pts = np.stack([x, y], axis=1).astype(np.int32)[None]
        cv2.polylines(canvas, pts, False, 255, 1, cv2.LINE_AA)
    return canvas.astype(np.float32) / 255.0


def render_blotches(
    img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, banks: NoiseBanks, strength: float
) -> None:
    """Class 4: a dark blotch with ragged edges, relief, cracks and sometimes a bright rim."""
    for window, comp in _components(mask):
        h, w = comp.shape
        sub = img[window]
        alpha = inner_alpha(
            comp, rng, banks, inset=rng.uniform(0.0, 4.0), soft=rng.uniform(1.0, 4.0), jag=rng.uniform(2.0, 8.0),
            jag_grain=6.0,
        )  # fmt: skip
        depth = np.exp(rng.uniform(np.log(8.0), np.log(65.0))) * strength
        smooth = crop(banks.smooth, rng, h + 1, w + 1)
        relief = (smooth[1:, 1:] - smooth[:-1, :-1]) * np.float32(rng.uniform(8.0, 25.0) * strength)
        texture = crop(banks.fine, rng, h, w) * np.float32(rng.uniform(3.0, 9.0)) + smooth[1:, 1:] * np.float32(
            rng.uniform(3.0, 10.0)
        )
        sub -= alpha * (np.float32(depth) + texture - relief)
        if rng.random() < 0.4:
            sub -= _cracks(h, w, rng) * alpha * np.float32(rng.uniform(25.0, 70.0) * strength)
        if rng.random() < 0.45:  # bright broken rim, as where scale has flaked off
            rim = (alpha > 0.02) & (alpha < 0.5) & (smooth[1:, 1:] > 0.2)
            sub[rim] += np.float32(rng.uniform(20.0, 70.0) * strength)


RENDERERS: dict[int, Renderer] = {1: render_pits, 2: render_marks, 3: render_scratches, 4: render_blotches}
"""Renderer per class id."""
