"""Training images at the network scale: decoded, resized by ``input.scale`` (and ``input.scale_x``) as
``cascade.preprocess`` resizes (``cv2.INTER_AREA``) and cached, with their masks resized to coverage the same way.

The datasets of :mod:`training.data` and the copy-paste donor pool of :mod:`training.augment_copy_paste` both
read through an :class:`ImageStore`; it imports neither.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from cascade.imageio import read_image
from cascade.specs import scaled_size

__all__ = ["ImageStore", "scaled_size"]


class ImageStore:
    """Reads training images as ``(h, w, 3)`` uint8 RGB at the network scale, optionally caching them.

    Args:
        images_dir: folder of the images.
        scale: resize factor (``cv2.INTER_AREA``, as at inference).
        cache: keep every image after its first read.
        scale_x: horizontal resize factor when it differs from ``scale`` (``InputPolicy.scale_x``).
    """

    def __init__(
        self, images_dir: str | Path, scale: float = 1.0, cache: bool = True, scale_x: float | None = None
    ) -> None:
        self.images_dir = Path(images_dir)
        self.scale = scale
        self.scale_x = scale_x
        self.cache = cache
        self._images: dict[str, np.ndarray] = {}
        self._shapes: dict[str, tuple[int, int]] = {}
        self._coverage: dict[Hashable, np.ndarray] = {}

    def full_shape(self, image_id: str) -> tuple[int, int]:
        """``(H, W)`` of the image file (before scaling)."""
        if image_id not in self._shapes:
            self.image(image_id)
        return self._shapes[image_id]

    def image(self, image_id: str) -> np.ndarray:
        """``(h, w, 3)`` uint8 RGB image at the network scale."""
        cached = self._images.get(image_id)
        if cached is not None:
            return cached
        rgb = read_image(self.images_dir / image_id)
        self._shapes[image_id] = rgb.shape[:2]
        h, w = scaled_size(*rgb.shape[:2], self.scale, self.scale_x)
        if (h, w) != rgb.shape[:2]:
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        if self.cache:
            self._images[image_id] = rgb
        return rgb

    def mask(self, mask: np.ndarray) -> np.ndarray:
        """Resize a full-size ``(H, W)`` bool mask to ``(h, w)`` float32 coverage in [0, 1] at the network scale."""
        h, w = scaled_size(*mask.shape, self.scale, self.scale_x)
        out = mask.astype(np.float32)
        if (h, w) != mask.shape:
            out = cv2.resize(out, (w, h), interpolation=cv2.INTER_AREA)
        return out

    def coverage(self, key: Hashable, full_mask: Callable[[], np.ndarray]) -> np.ndarray:
        """Network-scale float32 coverage of ``full_mask()``, a full-size ``(H, W)`` bool mask (or
        ``(C, H, W)``, returned channels-last ``(h, w, C)``); kept under ``key`` when caching.

        Values are quantised to 1/255 whether cached or not (kept as uint8), so every epoch sees the same
        targets (decoding and resizing the masks of every sample cost a third of a CPU classifier epoch).
        """
        cached = self._coverage.get(key)
        if cached is None:
            masks = full_mask()
            out = self.mask(masks) if masks.ndim == 2 else np.stack([self.mask(m) for m in masks], axis=-1)
            cached = np.rint(out * 255.0).astype(np.uint8)
            if self.cache:
                self._coverage[key] = cached
        return cached.astype(np.float32) * np.float32(1.0 / 255.0)

    def preload(self, image_ids: Sequence[str], show_progress: bool = True) -> None:
        """Read (and cache) all ``image_ids`` up front, e.g. before DataLoader workers fork."""
        if not self.cache:
            return
        for image_id in tqdm(image_ids, desc="reading images", leave=False, disable=not show_progress):
            self.image(image_id)
