"""The sample images the web GUI offers: drawn with ``cascade.synth`` at start-up, or read from a folder.

Synthetic steel is Severstal-sized (256x1600); for a bundle whose manifest states another ``image_size``
(e.g. NEU-Seg's 200x200) each sample is cut to that size around a defect, so the page shows images of the
shape the bundle knows. Real samples for such a bundle belong in ``--samples-dir``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from cascade.scoring.folder import list_images

__all__ = ["MAX_SAMPLES", "SAMPLE_SEED", "SampleStore"]

logger = logging.getLogger(__name__)

SAMPLE_SEED: int = 20190712
"""Seed of the synthetic samples (the same images on every start)."""

MAX_SAMPLES: int = 24
"""Most images taken from a ``--samples-dir``."""

_MEDIA_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}


class SampleStore:
    """Sample images held in memory, by file name.

    Args:
        samples: file name -> encoded image bytes.
    """

    def __init__(self, samples: Mapping[str, bytes]) -> None:
        self._samples = dict(samples)

    @classmethod
    def from_dir(cls, folder: str | Path, limit: int = MAX_SAMPLES) -> SampleStore:
        """The first ``limit`` images (sorted by name) of ``folder``."""
        folder = Path(folder)
        names = list_images(folder)[:limit]
        return cls({name: (folder / name).read_bytes() for name in names})

    @classmethod
    def synthetic(cls, n: int, seed: int = SAMPLE_SEED, size: tuple[int, int] | None = None) -> SampleStore:
        """``n`` synthetic JPEGs, deterministic for ``seed``; images showing a defect are preferred.

        Args:
            n: number of samples.
            seed: generator seed.
            size: ``(H, W)`` of the samples (default: the generator's 256x1600); each is cut to it around a
                defect (resized when larger than the generator's image).
        """
        from cascade.synth.config import SynthConfig
        from cascade.synth.generator import encode_jpeg, generate_image, image_ids

        if n <= 0:
            return cls({})
        config = SynthConfig()
        names = image_ids(seed, 4 * n)
        chosen: dict[str, bytes] = {}
        spare: dict[str, bytes] = {}
        for index, name in enumerate(names):
            synth = generate_image(seed, index, config)
            image, defect = synth.image, synth.masks.any(axis=0)
            if size is not None and tuple(size) != image.shape[:2]:
                image, defect = _cut(image, defect, (int(size[0]), int(size[1])))
            target = chosen if defect.any() else spare
            target[name] = encode_jpeg(image, config.jpeg_quality)
            if len(chosen) >= n:
                break
        for name, data in spare.items():
            if len(chosen) >= n:
                break
            chosen[name] = data
        logger.info("generated %d synthetic GUI samples (seed %d)", len(chosen), seed)
        return cls(dict(sorted(chosen.items())))

    def names(self) -> list[str]:
        """Sample file names, sorted."""
        return sorted(self._samples)

    def get(self, name: str) -> bytes | None:
        """Bytes of one sample, or None for an unknown name."""
        return self._samples.get(name)

    @staticmethod
    def media_type(name: str) -> str:
        """Content type for a sample file name."""
        return _MEDIA_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")


def _cut(image: np.ndarray, defect: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``image`` ``(H, W)`` and its defect mask cut to ``size`` around the first defect pixel, or resized."""
    from PIL import Image

    height, width = size
    full_h, full_w = image.shape[:2]
    if height > full_h or width > full_w:
        resized = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
        mask = Image.fromarray(defect.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)
        return np.asarray(resized), np.asarray(mask) > 0
    rows, cols = np.nonzero(defect)
    cy, cx = (int(rows[0]), int(cols[0])) if rows.size else (full_h // 2, full_w // 2)
    top = min(max(cy - height // 2, 0), full_h - height)
    left = min(max(cx - width // 2, 0), full_w - width)
    window = (slice(top, top + height), slice(left, left + width))
    return np.ascontiguousarray(image[window]), defect[window]
