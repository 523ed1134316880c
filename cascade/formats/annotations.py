"""Reading annotations (a train.csv or a submission, either layout) into per-image RLE strings.

The ``IMAGE_CLASS`` layout has a row per class and image; the ``LONG`` layout has positive rows only, so images
without defects are absent unless the caller lists every image (``image_ids`` or ``images_dir``).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from cascade.constants import CLASS_IDS, IMAGE_SHAPE
from cascade.formats.rows import AnnotationFormatError, Layout, RowError, parse_row, read_header
from cascade.rle import RLEError, decode_runs, decode_stack

__all__ = ["IMAGE_SUFFIXES", "Annotations", "list_image_ids", "read_annotations"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
"""File suffixes counted as images when listing a folder."""


@dataclass(frozen=True)
class Annotations:
    """Per-image RLE strings of every class.

    Attributes:
        image_ids: every image, clean ones included, in file (or caller) order.
        rles: image id -> one RLE string per class, in ``class_ids`` order ('' = class absent); read-only.
        layout: the layout the annotations were read from.
        class_ids: the classes, in array order (default Severstal's four).
        shapes: image id -> ``(H, W)`` where known (mask folders and VOC sets know every image's size).
    """

    image_ids: tuple[str, ...]
    rles: Mapping[str, tuple[str, ...]]
    layout: Layout = Layout.LONG
    class_ids: tuple[int, ...] = CLASS_IDS
    shapes: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = tuple(self.image_ids)
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"duplicate image ids: {dupes[:5]}")
        class_ids = tuple(int(c) for c in self.class_ids)
        if not class_ids or len(set(class_ids)) != len(class_ids):
            raise ValueError(f"class_ids must be distinct and non-empty, got {list(class_ids)}")
        object.__setattr__(self, "class_ids", class_ids)
        n = len(class_ids)
        empty = ("",) * n
        rles = {}
        for image_id in ids:
            value = self.rles.get(image_id, empty)
            if len(value) != n or not all(isinstance(r, str) for r in value):
                raise ValueError(f"{image_id}: expected {n} RLE strings (classes {list(class_ids)}), got {value!r}")
            rles[image_id] = tuple(value)
        unknown = sorted(set(self.rles) - set(ids))
        if unknown:
            raise ValueError(f"rles has {len(unknown)} ids missing from image_ids, e.g. {unknown[:5]}")
        object.__setattr__(self, "image_ids", ids)
        object.__setattr__(self, "rles", MappingProxyType(rles))
        object.__setattr__(self, "shapes", MappingProxyType({i: self.shapes[i] for i in ids if i in self.shapes}))

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_ids)

    def shape_of(self, image_id: str, default: tuple[int, int] | None = None) -> tuple[int, int]:
        """``(H, W)`` of an image: the recorded shape, else ``default``; ``KeyError`` when neither is known."""
        shape = self.shapes.get(image_id, default)
        if shape is None:
            raise KeyError(f"size of image {image_id!r} is not known; pass its shape (or --images DIR)")
        return shape

    def masks(self, image_id: str, shape: tuple[int, int] | None = None) -> np.ndarray:
        """Decoded masks of one image: ``(C, H, W)`` bool, index ``k`` = ``class_ids[k]``.

        ``shape`` defaults to the recorded shape of the image, else Severstal's 256x1600.
        """
        if image_id not in self.rles:
            raise KeyError(f"unknown image id {image_id!r} ({len(self)} images annotated)")
        return decode_stack(self.rles[image_id], shape or self.shape_of(image_id, IMAGE_SHAPE))

    def labels(self) -> np.ndarray:
        """Class presence per image: ``(N, C)`` bool in ``image_ids`` order."""
        out = np.zeros((len(self), self.num_classes), dtype=bool)
        for row, image_id in enumerate(self.image_ids):
            out[row] = [bool(r.strip()) for r in self.rles[image_id]]
        return out

    def class_counts(self) -> tuple[int, ...]:
        """Number of images containing each class, in class-id order."""
        return tuple(int(n) for n in self.labels().sum(axis=0))

    def subset(self, image_ids: Iterable[str]) -> Annotations:
        """The annotations of ``image_ids`` only (all must be known), in the given order."""
        ids = tuple(image_ids)
        unknown = [i for i in ids if i not in self.rles]
        if unknown:
            raise KeyError(f"{len(unknown)} image ids are not annotated, e.g. {unknown[:5]}")
        return Annotations(ids, {i: self.rles[i] for i in ids}, self.layout, self.class_ids, self.shapes)

    def with_shapes(self, shapes: Mapping[str, tuple[int, int]]) -> Annotations:
        """Copy with image sizes recorded (merged over the known ones)."""
        return Annotations(self.image_ids, self.rles, self.layout, self.class_ids, {**self.shapes, **shapes})


def list_image_ids(images_dir: str | Path) -> tuple[str, ...]:
    """Sorted file names of the images (``IMAGE_SUFFIXES``) directly in ``images_dir``."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"images folder not found: {images_dir}")
    return tuple(sorted(p.name for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))


def read_annotations(
    path: str | Path,
    image_ids: Iterable[str] | None = None,
    *,
    images_dir: str | Path | None = None,
    shape: tuple[int, int] | None = None,
    class_ids: Sequence[int] = CLASS_IDS,
) -> Annotations:
    """Read a train.csv or a submission in either layout (detected from the header).

    Args:
        path: the CSV file.
        image_ids: every image of the set; ids the file lacks become clean images, and ids the file has
            but this lacks are an error. Default: the images the file mentions, in file order.
        images_dir: list this folder for ``image_ids`` instead (not both).
        shape: ``(H, W)``; when given, RLE runs past ``H * W`` are an error.
        class_ids: the class set's ids; rows of other classes are an error.

    Raises:
        AnnotationFormatError: unknown header, malformed row, bad class id, duplicate row or bad RLE
            (the message gives the line number).
    """
    path = Path(path)
    if image_ids is not None and images_dir is not None:
        raise ValueError("pass image_ids or images_dir, not both")
    if images_dir is not None:
        image_ids = list_image_ids(images_dir)
    n_pixels = None if shape is None else int(shape[0]) * int(shape[1])
    class_ids = tuple(class_ids)
    index = {c: k for k, c in enumerate(class_ids)}
    rows: dict[str, list[str]] = {}
    seen: dict[tuple[str, int], int] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        layout = read_header(reader, path)
        for fields in reader:
            line = reader.line_num
            if not fields or fields == [""]:
                continue
            try:
                image_id, class_id, text = parse_row(fields, layout, class_ids)
            except RowError as exc:
                raise AnnotationFormatError(path, line, str(exc)) from exc
            if (image_id, class_id) in seen:
                raise AnnotationFormatError(
                    path,
                    line,
                    f"duplicate row for image {image_id!r} class {class_id} (first at line {seen[image_id, class_id]})",
                )
            seen[image_id, class_id] = line
            if text.strip():
                try:
                    decode_runs(text, n_pixels=n_pixels)
                except RLEError as exc:
                    raise AnnotationFormatError(path, line, f"{image_id} class {class_id}: {exc}") from exc
            rles = rows.setdefault(image_id, [""] * len(class_ids))
            rles[index[class_id]] = text.strip()
    if image_ids is None:
        ids = tuple(rows)
    else:
        ids = tuple(image_ids)
        listed = set(ids)
        missing = [i for i in rows if i not in listed]
        if missing:
            raise ValueError(f"{path}: {len(missing)} annotated images are not in the image list, e.g. {missing[:5]}")
    logger.debug("read %d annotated images (%d listed) from %s (%s)", len(rows), len(ids), path, layout.name)
    return Annotations(ids, {i: tuple(r) for i, r in rows.items()}, layout, class_ids)
