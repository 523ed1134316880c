"""Out-of-distribution scores: how far an input image is from the images a bundle was trained on.

Every image is summarised by a few statistics of its grey levels (``image_features``): brightness (mean,
5th/50th/95th percentiles), contrast and skewness on a copy subsampled to at most ``_SIDE`` pixels per side;
on a full-resolution centre crop, the edge energy, its ratio to the edge energy at a quarter of the resolution
(sharpness) and the share of neighbouring pixels of equal grey level (flatness); colourfulness (steel is grey);
the log height, width and aspect ratio; and two statistics that blur and inversion cannot fake, on a
full-resolution centre crop of at most ``_TEXTURE_SIDE`` pixels per side:

- ``polarity``: the rank correlation, over 8x8 blocks without clipped pixels, between a block's brightness and
  its fine-scale energy (mean absolute difference to a 3x3 mean). Camera noise and the texture of steel are
  stronger where the surface is brighter, so it is positive on both shipped data sets (median 0.57; below 0
  for under 2% of NEU-Seg images, bright smooth sheets with dark textured patches, and under 1% of the
  synthetic ones); inverting an image negates it exactly. Brightness, contrast and skewness barely notice an
  inversion: the grey levels of steel are nearly symmetric.
- ``fine_coarse``: the log ratio of the energy between scales 2 and 5 pixels to that between 13 and 31 pixels
  (differences of box means). Blur removes the fine band and leaves the coarse one, whatever the contrast.

At packaging :func:`fit_reference` stores each feature's median (``center``) and, on each side, the distance
from the median to the training images' ``tail`` quantile (0.998 above, 0.002 below: ``scale`` and
``scale_below``, floored), with the names of the features it used. A feature's deviation is its distance
from the median in units of the spread on its side, so 1 means "as far out as the most extreme 0.2% of the
training images": heavy-tailed statistics (skew, flatness) no longer set a threshold the others cannot
reach. ``polarity`` measures its lower spread to the 2% quantile instead (``_TAILS``): an inversion puts it
just past the long lower tail of real steel, at minus its usual value, and the 0.2% quantile would
swallow most of that gap. An image's score is its largest deviation over the features
(:meth:`OodReference.score`), so one clearly foreign statistic is enough; it is out of distribution above
``threshold``: the 99% quantile of the training images' own scores times 1.05. Measured with
``bench/bench_ood.py`` (``bench/results/ood.md``): own held-out images flagged at most 5%, inverted and
15-pixel-blurred ones at least 90%, on both shipped data sets. References written before these changes (no
``scale_below``: one robust scale, 1.4826 MAD, for both sides; fewer features) load and keep scoring as
they were written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy.stats import rankdata

__all__ = ["FEATURE_NAMES", "OodReference", "fit_reference", "fit_reference_on_images", "image_features"]

_FLOORS: dict[str, float] = {
    "mean": 0.01, "p05": 0.01, "p50": 0.01, "p95": 0.01, "std": 0.005, "skew": 0.05, "edges": 0.002,
    "sharpness": 0.02, "flatness": 0.01, "colour": 0.002, "log_height": 0.02, "log_width": 0.02,
    "log_aspect": 0.02, "polarity": 0.02, "fine_coarse": 0.02,
}  # fmt: skip
"""Smallest spread per feature, so a feature constant in training (e.g. the image size) still scores finitely."""

FEATURE_NAMES: tuple[str, ...] = tuple(_FLOORS)
"""Every statistic ``image_features`` computes, in its default order."""

_SIDE = 256
"""Images are reduced (by striding) to at most this many pixels per side before the brightness statistics."""

_TEXTURE_SIDE = 1024
"""``polarity`` and ``fine_coarse`` look at a full-resolution centre crop of at most this many pixels per side."""

_TAILS: dict[str, float] = {"polarity": 0.98}
"""Tail quantile of the spreads per feature where it differs from ``fit_reference``'s ``tail`` (see the module
docstring: an inversion mirrors ``polarity`` about 0, just past the long lower tail of real steel)."""

_TEXTURE = frozenset({"polarity", "fine_coarse"})
_BLOCK = 8
_CLIPPED = (0.02, 0.98)  # blocks reaching below / above these grey levels are left out of ``polarity``


def image_features(image: np.ndarray, names: Sequence[str] = FEATURE_NAMES) -> np.ndarray:
    """The statistics of one image.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` uint8.
        names: which statistics, in this order (from ``FEATURE_NAMES``).

    Returns:
        ``(len(names),)`` float64.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W) or (H, W, 3) uint8, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    step = max(1, int(np.ceil(max(height, width) / _SIDE)))
    small = _grey(image[::step, ::step])
    colour = 0.0
    if image.ndim == 3:
        rgb = image[::step, ::step].astype(np.float32) / 255.0
        colour = float(np.mean(np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2])))
    p05, p50, p95 = np.percentile(small, (5, 50, 95))
    mean, std = float(small.mean()), float(small.std())
    skew = float(np.mean((small - mean) ** 3) / max(std, 1e-3) ** 3)
    crop = _grey(_centre_crop(image, _SIDE))
    edges = _gradient(crop)
    steps = np.abs(np.diff(crop, axis=1)).ravel()
    features = {
        "mean": mean, "p05": p05, "p50": p50, "p95": p95, "std": std, "skew": float(np.clip(skew, -10, 10)),
        "edges": edges, "sharpness": edges / max(_gradient(crop[::4, ::4]), 1e-4),
        "flatness": float(np.mean(steps < 0.5 / 255)) if steps.size else 1.0, "colour": colour,
        "log_height": np.log(height), "log_width": np.log(width), "log_aspect": np.log(width / height),
    }  # fmt: skip
    if _TEXTURE.intersection(names):
        texture = _grey(_centre_crop(image, _TEXTURE_SIDE))
        if "polarity" in names:
            features["polarity"] = _polarity(texture)
        if "fine_coarse" in names:
            features["fine_coarse"] = _fine_coarse(texture)
    return np.asarray([features[name] for name in names], dtype=np.float64)


def _centre_crop(image: np.ndarray, side: int) -> np.ndarray:
    height, width = image.shape[:2]
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    return image[top : top + side, left : left + side]


def _box(grey: np.ndarray, k: int) -> np.ndarray:
    return cv2.blur(grey, (k, k), borderType=cv2.BORDER_REFLECT)


def _polarity(grey: np.ndarray) -> float:
    """Rank correlation of block brightness with block fine-scale energy (blocks with clipped pixels left out)."""
    rows, cols = grey.shape[0] // _BLOCK, grey.shape[1] // _BLOCK
    if rows * cols < 4:
        return 0.0
    fine = np.abs(grey - _box(grey, 3))

    def blocks(values: np.ndarray) -> np.ndarray:
        cut = values[: rows * _BLOCK, : cols * _BLOCK].reshape(rows, _BLOCK, cols, _BLOCK)
        return cut.transpose(0, 2, 1, 3).reshape(rows * cols, _BLOCK * _BLOCK)

    levels, energy = blocks(grey), blocks(fine).mean(axis=1)
    keep = (levels.min(axis=1) > _CLIPPED[0]) & (levels.max(axis=1) < _CLIPPED[1])
    brightness, energy = levels.mean(axis=1)[keep], energy[keep]
    if brightness.size < 4 or np.ptp(brightness) <= 0 or np.ptp(energy) <= 0:
        return 0.0
    return float(np.corrcoef(rankdata(brightness), rankdata(energy))[0, 1])


def _fine_coarse(grey: np.ndarray) -> float:
    """Log ratio of the energy between scales 2 and 5 pixels to the energy between 13 and 31 pixels."""
    fine = np.mean(np.abs(_box(grey, 2) - _box(grey, 5)))
    coarse = np.mean(np.abs(_box(grey, 13) - _box(grey, 31)))
    return float(np.log(fine + 1e-6) - np.log(coarse + 1e-6))


def _gradient(grey: np.ndarray) -> float:
    """Mean absolute difference of neighbouring pixels (both directions)."""
    dx, dy = np.diff(grey, axis=1), np.diff(grey, axis=0)
    return float(np.mean(np.abs(dx)) if dx.size else 0.0) + float(np.mean(np.abs(dy)) if dy.size else 0.0)


def _grey(image: np.ndarray) -> np.ndarray:
    """Grey levels in [0, 1]: the mean of the channels. Summed channel by channel: ``astype(...).mean(axis=2)``
    over a cropped (strided) view took 20x longer, and this runs for every image the service predicts."""
    if image.ndim == 2:
        return image.astype(np.float32) / 255.0
    grey = image[..., 0].astype(np.float32)
    grey += image[..., 1]
    grey += image[..., 2]
    grey *= np.float32(1 / 765)
    return grey


@dataclass(frozen=True)
class OodReference:
    """The training images' statistics and the score above which an image is out of distribution.

    Attributes:
        center: ``(F,)`` median of each feature over the training images.
        scale: ``(F,)`` spread of each feature above ``center`` (below too when ``scale_below`` is None).
        threshold: scores above this are out of distribution.
        images: training images the reference was fitted on.
        features: the ``F`` feature names (from ``FEATURE_NAMES``), in the order of ``center`` and ``scale``.
        scale_below: ``(F,)`` spread below ``center``; None (references written before it existed): ``scale``.
    """

    center: tuple[float, ...]
    scale: tuple[float, ...]
    threshold: float
    images: int = 0
    features: tuple[str, ...] = FEATURE_NAMES
    scale_below: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        names = (self.features,) if isinstance(self.features, str) else tuple(self.features)
        if not names or len(set(names)) != len(names) or any(n not in _FLOORS for n in names):
            raise ValueError(f"OodReference.features must be distinct names from {list(FEATURE_NAMES)}, got {names}")
        object.__setattr__(self, "features", names)
        for attr in ("center", "scale", "scale_below"):
            if attr == "scale_below" and self.scale_below is None:
                continue
            values = np.asarray(getattr(self, attr), dtype=np.float64)
            if values.shape != (len(names),) or not np.all(np.isfinite(values)):
                raise ValueError(f"OodReference.{attr} must be {len(names)} finite numbers ({', '.join(names)})")
            if attr != "center" and values.min() <= 0:
                raise ValueError(f"OodReference.{attr} must be > 0")
            object.__setattr__(self, attr, tuple(float(v) for v in values))
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int | float) or self.threshold <= 0:
            raise ValueError(f"OodReference.threshold must be a number > 0, got {self.threshold!r}")
        object.__setattr__(self, "threshold", float(self.threshold))
        if isinstance(self.images, bool) or not isinstance(self.images, int) or self.images < 0:
            raise ValueError(f"OodReference.images must be an integer >= 0, got {self.images!r}")

    def score_features(self, features: np.ndarray) -> np.ndarray:
        """Scores of ``(N, F)`` feature rows (``self.features`` order): the largest deviation in spreads."""
        deviation = np.atleast_2d(features) - np.asarray(self.center)
        below = np.asarray(self.scale if self.scale_below is None else self.scale_below)
        return np.where(deviation > 0, deviation / np.asarray(self.scale), -deviation / below).max(axis=1)

    def score(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``(N,)`` out-of-distribution scores of uint8 images (larger: further from the training images)."""
        if not len(images):
            return np.zeros(0)
        return self.score_features(np.stack([image_features(image, self.features) for image in images]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "features": list(self.features),
            "center": list(self.center),
            "scale": list(self.scale),
            **({"scale_below": list(self.scale_below)} if self.scale_below is not None else {}),
            "threshold": self.threshold,
            "images": self.images,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OodReference:
        """From :meth:`to_dict` output; ``ValueError`` names a bad or unknown field."""
        if not isinstance(data, Mapping):
            raise ValueError(f"ood must be an object, got {type(data).__name__}")
        allowed = {"features", "center", "scale", "scale_below", "threshold", "images"}
        if unknown := sorted(set(data) - allowed):
            raise ValueError(f"ood has unknown field(s) {unknown}; allowed fields are {sorted(allowed)}")
        try:
            return cls(**data)
        except TypeError as err:
            raise ValueError(f"ood: {err}") from err


def fit_reference(
    features: np.ndarray,
    quantile: float = 0.99,
    margin: float = 1.05,
    names: Sequence[str] = FEATURE_NAMES,
    tail: float = 0.998,
) -> OodReference:
    """Fit the reference on the training images' features.

    Args:
        features: ``(N, F)`` rows of :func:`image_features` over ``names`` (N >= 2).
        quantile: the threshold is this quantile of the training images' own scores ...
        margin: ... times this.
        names: the features' names.
        tail: each side's spread is the distance from the median to this quantile (above) and to
            ``1 - tail`` (below); features in ``_TAILS`` use their own.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] != len(names) or len(features) < 2:
        raise ValueError(f"features must be (N >= 2, {len(names)}), got {features.shape}")
    if not 0.5 < tail < 1 or not 0 < quantile <= 1 or margin <= 0:
        raise ValueError(f"need 0.5 < tail < 1, 0 < quantile <= 1, margin > 0; got {tail}, {quantile}, {margin}")
    center = np.median(features, axis=0)
    floors = np.array([_FLOORS[n] for n in names])
    tails = np.array([_TAILS.get(n, tail) for n in names])
    upper = np.array([np.quantile(column, t) for column, t in zip(features.T, tails, strict=True)])
    lower = np.array([np.quantile(column, 1 - t) for column, t in zip(features.T, tails, strict=True)])
    above, below = np.maximum(upper - center, floors), np.maximum(center - lower, floors)
    reference = OodReference(tuple(center), tuple(above), 1.0, len(features), tuple(names), tuple(below))
    threshold = float(np.quantile(reference.score_features(features), quantile)) * margin
    return dataclasses.replace(reference, threshold=max(threshold, 1e-6))


def fit_reference_on_images(
    images_dir: str | Path, image_ids: Sequence[str], max_images: int = 2000, show_progress: bool = False
) -> OodReference:
    """:func:`fit_reference` on (at most ``max_images`` evenly spaced) image files of a folder."""
    from tqdm import tqdm

    from cascade.imageio import read_image

    if len(image_ids) < 2:
        raise ValueError(f"an out-of-distribution reference needs at least 2 images, got {len(image_ids)}")
    picked = [image_ids[i] for i in np.unique(np.linspace(0, len(image_ids) - 1, max_images).round().astype(int))]
    rows = [
        image_features(read_image(Path(images_dir) / i))
        for i in tqdm(picked, desc="ood reference", leave=False, disable=not show_progress)
    ]
    return fit_reference(np.stack(rows))
