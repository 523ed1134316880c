"""The sample images the web GUI offers, with their ground truth where labels exist.

Samples are drawn with ``cascade.synth`` at start-up (their ground truth is the generator's masks, shown when
the bundle's classes are Severstal's, the generator's), or read from ``--samples-dir``: a plain folder of
images, or labelled data as ``cascade.datasource.open_labelled`` reads it — a Kaggle ``train.csv`` next to the
images folder (``data/demo-test/train_images``), a Pascal VOC folder (``JPEGImages/`` + ``SegmentationClass/``)
or a mask folder (``images/`` + ``masks/``). Labels are read with the served bundle's classes; labels that do
not fit them are left out with a warning and the images are still offered.

Synthetic steel is Severstal-sized (256x1600); for a bundle whose manifest states another ``image_size``
(e.g. NEU-Seg's 200x200) each sample is cut to that size around a defect, so the page shows images of the
shape the bundle knows. Real samples for such a bundle belong in ``--samples-dir``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cascade.classes import SEVERSTAL, ClassSet
from cascade.datasource import DEFAULT_ANNOTATIONS, DataSourceError, LabelledSet, detect_kind, open_labelled
from cascade.rle import decode_stack, encode_stack
from cascade.scoring.folder import list_images

__all__ = ["MAX_SAMPLES", "SAMPLE_SEED", "SampleStore", "SampleTruth"]

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


@dataclass(frozen=True)
class SampleTruth:
    """The labelled masks of one sample.

    Attributes:
        class_ids: the served bundle's class ids, in order.
        rles: one Kaggle RLE per class id ('' = absent).
        shape: ``(H, W)`` of the image.
    """

    class_ids: tuple[int, ...]
    rles: tuple[str, ...]
    shape: tuple[int, int]

    @classmethod
    def from_masks(cls, class_ids: tuple[int, ...], masks: np.ndarray) -> SampleTruth:
        """From ``(K, H, W)`` bool masks, index ``k`` = ``class_ids[k]``."""
        return cls(tuple(class_ids), tuple(encode_stack(masks)), (int(masks.shape[1]), int(masks.shape[2])))

    @property
    def present(self) -> tuple[int, ...]:
        """Class ids with a non-empty mask."""
        return tuple(cid for cid, rle in zip(self.class_ids, self.rles, strict=True) if rle)

    def masks(self) -> np.ndarray:
        """``(K, H, W)`` bool, index ``k`` = ``class_ids[k]``."""
        return decode_stack(self.rles, self.shape)


class SampleStore:
    """Sample images held in memory, by file name, with the ground truth of the labelled ones.

    Args:
        samples: file name -> encoded image bytes.
        truth: file name -> its labelled masks (samples without an entry are unlabelled).
    """

    def __init__(self, samples: Mapping[str, bytes], truth: Mapping[str, SampleTruth] | None = None) -> None:
        self._samples = dict(samples)
        self._truth = {name: t for name, t in (truth or {}).items() if name in self._samples}

    @classmethod
    def from_dir(cls, folder: str | Path, limit: int = MAX_SAMPLES, classes: ClassSet | None = None) -> SampleStore:
        """Up to ``limit`` images of ``folder``, with their labels when the folder holds labelled data.

        Plain folders give the first ``limit`` images by name. Labelled ones give, first, the first image of
        each class (so every class the labels hold is shown), then the rest by name.

        Args:
            folder: images, a labelled data folder, or the images folder of a Kaggle CSV one level up.
            limit: most samples.
            classes: the served bundle's classes, which the labels are read with (default: the data's own).
        """
        folder = Path(folder)
        labelled = _open_labels(folder, classes)
        if labelled is None:
            names = list_images(folder)[:limit]
            return cls({name: (folder / name).read_bytes() for name in names})
        names = _pick(labelled, limit)
        annotations = labelled.annotations
        truth = {
            name: SampleTruth(annotations.class_ids, tuple(annotations.rles[name]), annotations.shape_of(name))
            for name in names
        }
        store = cls({name: (labelled.images_dir / name).read_bytes() for name in names}, truth)
        logger.info("%d GUI samples with %s labels from %s", len(names), labelled.kind, labelled.root)
        return store

    @classmethod
    def synthetic(
        cls,
        n: int,
        seed: int = SAMPLE_SEED,
        size: tuple[int, int] | None = None,
        classes: ClassSet | None = None,
    ) -> SampleStore:
        """``n`` synthetic JPEGs, deterministic for ``seed``; images showing a defect are preferred.

        Args:
            n: number of samples.
            seed: generator seed.
            size: ``(H, W)`` of the samples (default: the generator's 256x1600); each is cut to it around a
                defect (resized when larger than the generator's image).
            classes: the served bundle's classes; the generator's masks are kept as ground truth when they are
                Severstal's (the generator's own, also the default).
        """
        from cascade.synth.config import SynthConfig
        from cascade.synth.generator import encode_jpeg, generate_image, image_ids

        if n <= 0:
            return cls({})
        labelled = classes is None or (classes.ids, classes.names) == (SEVERSTAL.ids, SEVERSTAL.names)
        config = SynthConfig()
        names = image_ids(seed, 4 * n)
        chosen: dict[str, bytes] = {}
        spare: dict[str, bytes] = {}
        truth: dict[str, SampleTruth] = {}
        for index, name in enumerate(names):
            synth = generate_image(seed, index, config)
            image, masks = synth.image, synth.masks
            if size is not None and tuple(size) != image.shape[:2]:
                image, masks = _cut(image, masks, (int(size[0]), int(size[1])))
            target = chosen if masks.any() else spare
            target[name] = encode_jpeg(image, config.jpeg_quality)
            if labelled:
                truth[name] = SampleTruth.from_masks(SEVERSTAL.ids, masks)
            if len(chosen) >= n:
                break
        for name, data in spare.items():
            if len(chosen) >= n:
                break
            chosen[name] = data
        logger.info("generated %d synthetic GUI samples (seed %d)", len(chosen), seed)
        return cls(dict(sorted(chosen.items())), truth)

    def names(self) -> list[str]:
        """Sample file names, sorted."""
        return sorted(self._samples)

    def get(self, name: str) -> bytes | None:
        """Bytes of one sample, or None for an unknown name."""
        return self._samples.get(name)

    def truth(self, name: str) -> SampleTruth | None:
        """The labelled masks of one sample, or None when it has no labels (or is unknown)."""
        return self._truth.get(name)

    @staticmethod
    def media_type(name: str) -> str:
        """Content type for a sample file name."""
        return _MEDIA_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")


def _open_labels(folder: Path, classes: ClassSet | None) -> LabelledSet | None:
    """The labelled data ``folder`` is (or is the images folder of), or None for a plain image folder."""
    candidates = [folder]
    if (folder.parent / DEFAULT_ANNOTATIONS).is_file():
        candidates.append(folder.parent)  # data/demo-test/train_images next to data/demo-test/train.csv
    for root in candidates:
        try:
            detect_kind(root)
        except DataSourceError:
            continue
        try:
            labelled = open_labelled(root, classes=classes, require_masks=False)
        except DataSourceError as err:
            logger.warning("samples in %s are shown without ground truth: their labels do not fit: %s", folder, err)
            return None
        if root == folder or labelled.images_dir.resolve() == folder.resolve():
            return labelled
    return None


def _pick(labelled: LabelledSet, limit: int) -> list[str]:
    """Up to ``limit`` image ids: the first holding each class, then the others in order."""
    ids = labelled.image_ids
    present = labelled.annotations.labels()  # (N, K) bool
    first = [int(np.argmax(present[:, k])) for k in range(present.shape[1]) if present[:, k].any()]
    order = list(dict.fromkeys([*sorted(first), *range(len(ids))]))
    return sorted(ids[i] for i in order[:limit])


def _cut(image: np.ndarray, masks: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``image`` ``(H, W)`` and its masks ``(K, H, W)`` cut to ``size`` around the first defect pixel, or resized."""
    from PIL import Image

    height, width = size
    full_h, full_w = image.shape[:2]
    if height > full_h or width > full_w:
        resized = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
        scaled = [
            np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST))
            for m in masks
        ]
        return np.asarray(resized), np.stack(scaled) > 0
    rows, cols = np.nonzero(masks.any(axis=0))
    cy, cx = (int(rows[0]), int(cols[0])) if rows.size else (full_h // 2, full_w // 2)
    top = min(max(cy - height // 2, 0), full_h - height)
    left = min(max(cx - width // 2, 0), full_w - width)
    return np.ascontiguousarray(image[top : top + height, left : left + width]), np.ascontiguousarray(
        masks[:, top : top + height, left : left + width]
    )
