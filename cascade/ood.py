"""Out-of-distribution scores: how far an input image is from the images a bundle was trained on.

Every image is summarised by a few statistics of its grey levels (``image_features``): brightness (mean,
5th/50th/95th percentiles), contrast and skewness on a copy subsampled to at most ``_SIDE`` pixels per side;
on a full-resolution centre crop, the edge energy, its ratio to the edge energy at a quarter of the resolution
(sharpness) and the share of neighbouring pixels of equal grey level (flatness: blur drops the
first two and raises the third); colourfulness (steel is grey); and the log height, width and aspect ratio.
At packaging :func:`fit_reference` stores their robust centre (median) and scale (1.4826 MAD, floored) over
the training images, with the names of the features it used (a reference keeps scoring with its own list
when later versions add features). An image's
score is its largest standardised deviation over the features (:meth:`OodReference.score`), so one clearly
foreign statistic is enough; it is out of distribution above ``threshold``: a high quantile of the training
images' own scores times a margin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FEATURE_NAMES", "OodReference", "fit_reference", "fit_reference_on_images", "image_features"]

_FLOORS: dict[str, float] = {
    "mean": 0.01, "p05": 0.01, "p50": 0.01, "p95": 0.01, "std": 0.005, "skew": 0.05, "edges": 0.002,
    "sharpness": 0.02, "flatness": 0.01, "colour": 0.002, "log_height": 0.02, "log_width": 0.02,
    "log_aspect": 0.02,
}  # fmt: skip
"""Smallest scale per feature, so a feature constant in training (e.g. the image size) still scores finitely."""

FEATURE_NAMES: tuple[str, ...] = tuple(_FLOORS)
"""Every statistic ``image_features`` computes, in its default order."""

_SIDE = 256
"""Images are reduced (by striding) to at most this many pixels per side before the statistics."""


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
    top, left = max(0, (height - _SIDE) // 2), max(0, (width - _SIDE) // 2)
    crop = _grey(image[top : top + _SIDE, left : left + _SIDE])
    edges = _gradient(crop)
    steps = np.abs(np.diff(crop, axis=1)).ravel()
    features = {
        "mean": mean, "p05": p05, "p50": p50, "p95": p95, "std": std, "skew": float(np.clip(skew, -10, 10)),
        "edges": edges, "sharpness": edges / max(_gradient(crop[::4, ::4]), 1e-4),
        "flatness": float(np.mean(steps < 0.5 / 255)) if steps.size else 1.0, "colour": colour,
        "log_height": np.log(height), "log_width": np.log(width), "log_aspect": np.log(width / height),
    }  # fmt: skip
    return np.asarray([features[name] for name in names], dtype=np.float64)


def _gradient(grey: np.ndarray) -> float:
    """Mean absolute difference of neighbouring pixels (both directions)."""
    dx, dy = np.diff(grey, axis=1), np.diff(grey, axis=0)
    return float(np.mean(np.abs(dx)) if dx.size else 0.0) + float(np.mean(np.abs(dy)) if dy.size else 0.0)


def _grey(image: np.ndarray) -> np.ndarray:
    grey = image.astype(np.float32) / 255.0
    return grey.mean(axis=2) if grey.ndim == 3 else grey


@dataclass(frozen=True)
class OodReference:
    """The training images' statistics and the score above which an image is out of distribution.

    Attributes:
        center: ``(F,)`` median of each feature over the training images.
        scale: ``(F,)`` robust spread (1.4826 MAD, floored) of each feature.
        threshold: scores above this are out of distribution.
        images: training images the reference was fitted on.
        features: the ``F`` feature names (from ``FEATURE_NAMES``), in the order of ``center`` and ``scale``.
    """

    center: tuple[float, ...]
    scale: tuple[float, ...]
    threshold: float
    images: int = 0
    features: tuple[str, ...] = FEATURE_NAMES

    def __post_init__(self) -> None:
        names = (self.features,) if isinstance(self.features, str) else tuple(self.features)
        if not names or len(set(names)) != len(names) or any(n not in _FLOORS for n in names):
            raise ValueError(f"OodReference.features must be distinct names from {list(FEATURE_NAMES)}, got {names}")
        object.__setattr__(self, "features", names)
        for attr in ("center", "scale"):
            values = np.asarray(getattr(self, attr), dtype=np.float64)
            if values.shape != (len(names),) or not np.all(np.isfinite(values)):
                raise ValueError(f"OodReference.{attr} must be {len(names)} finite numbers ({', '.join(names)})")
            object.__setattr__(self, attr, tuple(float(v) for v in values))
        if min(self.scale) <= 0:
            raise ValueError("OodReference.scale must be > 0")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int | float) or self.threshold <= 0:
            raise ValueError(f"OodReference.threshold must be a number > 0, got {self.threshold!r}")
        object.__setattr__(self, "threshold", float(self.threshold))
        if isinstance(self.images, bool) or not isinstance(self.images, int) or self.images < 0:
            raise ValueError(f"OodReference.images must be an integer >= 0, got {self.images!r}")

    def score_features(self, features: np.ndarray) -> np.ndarray:
        """Scores of ``(N, F)`` feature rows (``self.features`` order): the largest absolute standardised deviation."""
        z = (np.atleast_2d(features) - np.asarray(self.center)) / np.asarray(self.scale)
        return np.abs(z).max(axis=1)

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
            "threshold": self.threshold,
            "images": self.images,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OodReference:
        """From :meth:`to_dict` output; ``ValueError`` names a bad or unknown field."""
        if not isinstance(data, Mapping):
            raise ValueError(f"ood must be an object, got {type(data).__name__}")
        allowed = {"features", "center", "scale", "threshold", "images"}
        if unknown := sorted(set(data) - allowed):
            raise ValueError(f"ood has unknown field(s) {unknown}; allowed fields are {sorted(allowed)}")
        try:
            return cls(**data)
        except TypeError as err:
            raise ValueError(f"ood: {err}") from err


def fit_reference(
    features: np.ndarray, quantile: float = 0.995, margin: float = 1.25, names: Sequence[str] = FEATURE_NAMES
) -> OodReference:
    """Fit the reference on the training images' features.

    Args:
        features: ``(N, F)`` rows of :func:`image_features` over ``names`` (N >= 2).
        quantile: the threshold is this quantile of the training images' own scores ...
        margin: ... times this.
        names: the features' names.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] != len(names) or len(features) < 2:
        raise ValueError(f"features must be (N >= 2, {len(names)}), got {features.shape}")
    center = np.median(features, axis=0)
    floors = np.array([_FLOORS[n] for n in names])
    scale = np.maximum(1.4826 * np.median(np.abs(features - center), axis=0), floors)
    reference = OodReference(tuple(center), tuple(scale), 1.0, len(features), tuple(names))
    threshold = float(np.quantile(reference.score_features(features), quantile)) * margin
    return OodReference(reference.center, reference.scale, max(threshold, 1e-6), len(features), tuple(names))


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
