"""The sample images the web GUI offers: drawn with ``cascade.synth`` at start-up, or read from a folder."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

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
    def synthetic(cls, n: int, seed: int = SAMPLE_SEED) -> SampleStore:
        """``n`` synthetic JPEGs, deterministic for ``seed``; images showing a defect are preferred."""
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
            target = chosen if synth.masks.any() else spare
            target[name] = encode_jpeg(synth.image, config.jpeg_quality)
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
