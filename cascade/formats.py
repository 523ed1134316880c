"""Kaggle CSV formats: read annotations in either layout, write submissions.

Two layouts exist. ``ImageId_ClassId,EncodedPixels`` (the original train.csv and the submission format)
has four rows per image, ``<image>_<class id>`` and a blank RLE for an absent class.
``ImageId,ClassId,EncodedPixels`` (the re-released train.csv) has positive rows only, so images without
defects are absent unless the caller lists every image (``image_ids`` or ``images_dir``).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import IO, Any

import numpy as np

from cascade.constants import CLASS_IDS, IMAGE_SHAPE
from cascade.rle import RLEError, decode_runs, decode_stack

__all__ = [
    "IMAGE_SUFFIXES",
    "AnnotationFormatError",
    "Annotations",
    "Layout",
    "SubmissionWriter",
    "list_image_ids",
    "read_annotations",
    "split_image_class",
    "write_submission",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
"""File suffixes counted as images when listing a folder."""

# An RLE of a 1600x256 image can reach ~5 MB (a checkerboard); csv's default field limit is 128 KiB.
csv.field_size_limit(max(csv.field_size_limit(), 1 << 28))


class Layout(Enum):
    """CSV layout of annotations and submissions; the value is the header line."""

    IMAGE_CLASS = "ImageId_ClassId,EncodedPixels"
    LONG = "ImageId,ClassId,EncodedPixels"

    @property
    def columns(self) -> tuple[str, ...]:
        """Header column names."""
        return tuple(self.value.split(","))


class AnnotationFormatError(ValueError):
    """A malformed annotations or submission CSV; the message starts with ``path:line:``."""

    def __init__(self, path: str | Path, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = Path(path)
        self.line = line


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


def split_image_class(value: str, class_ids: Sequence[int] = CLASS_IDS) -> tuple[str, int]:
    """Split ``'0002cc93b.jpg_1'`` into ``('0002cc93b.jpg', 1)``.

    Raises:
        ValueError: no ``_<class id>`` suffix, or a class id not in ``class_ids``.
    """
    image_id, sep, class_text = value.rpartition("_")
    if not sep or not image_id:
        raise ValueError(f"ImageId_ClassId {value!r} is not '<image id>_<class id>'")
    if class_text not in {str(c) for c in class_ids}:
        raise ValueError(f"class id {class_text!r} in {value!r} is not one of {list(class_ids)}")
    return image_id, int(class_text)


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
        layout = _read_header(reader, path)
        for fields in reader:
            line = reader.line_num
            if not fields or fields == [""]:
                continue
            image_id, class_id, text = _parse_row(fields, layout, path, line, class_ids)
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


def write_submission(
    path: str | Path,
    rows: Iterable[tuple[str, Sequence[str]]],
    layout: Layout = Layout.IMAGE_CLASS,
    class_ids: Sequence[int] = CLASS_IDS,
) -> int:
    """Write a submission CSV (overwriting ``path``).

    Args:
        path: output file.
        rows: ``(image_id, RLE strings)`` per image, one per class in ``class_ids`` order ('' = class absent).
        layout: ``IMAGE_CLASS`` writes a row per class and image (blank RLE for none); ``LONG`` positive rows only.
        class_ids: the class set's ids.

    Returns:
        Number of images written.
    """
    with SubmissionWriter(path, layout, class_ids=class_ids) as writer:
        for image_id, rles in rows:
            writer.write(image_id, rles)
        return len(writer.image_ids)


class SubmissionWriter:
    """Writes a submission one image at a time, flushing after each, optionally appending to a file.

    Use as a context manager: ``with SubmissionWriter(path, append=True) as w: w.write(image_id, rles)``.
    With ``append=True`` an existing non-empty file keeps its rows (its header must match ``layout``),
    a trailing partial line left by a crash is cut off, and ``image_ids`` starts with the ids already in it.
    """

    def __init__(
        self,
        path: str | Path,
        layout: Layout = Layout.IMAGE_CLASS,
        *,
        append: bool = False,
        fsync: bool = False,
        class_ids: Sequence[int] = CLASS_IDS,
    ) -> None:
        self.path = Path(path)
        self.layout = layout
        self.class_ids = tuple(class_ids)
        self.append = append
        self.fsync = fsync
        self.image_ids: list[str] = []
        self._seen: set[str] = set()
        self._file: IO[str] | None = None
        self._writer: Any = None  # csv writer over _file

    def __enter__(self) -> SubmissionWriter:
        resuming = self.append and self.path.is_file() and self.path.stat().st_size > 0
        if resuming:
            self._prepare_append()
            self._file = self.path.open("a", newline="", encoding="utf-8")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file, lineterminator="\n")
        if not resuming:
            self._writer.writerow(self.layout.columns)
            self._flush()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def write(self, image_id: str, rles: Sequence[str]) -> None:
        """Append one image's rows and flush.

        Args:
            image_id: the image's file name.
            rles: one RLE string per class, in ``class_ids`` order ('' = class absent).
        """
        if self._writer is None:
            raise RuntimeError("SubmissionWriter is not open; use it as a context manager")
        if not isinstance(image_id, str) or not image_id or image_id != image_id.strip():
            raise ValueError(f"image id must be a non-empty string without surrounding spaces, got {image_id!r}")
        n = len(self.class_ids)
        if isinstance(rles, str) or len(rles) != n or not all(isinstance(r, str) for r in rles):
            raise ValueError(
                f"{image_id}: expected {n} RLE strings in class-id order {list(self.class_ids)}, got {rles!r}"
            )
        if image_id in self._seen:
            raise ValueError(f"image {image_id!r} was already written to {self.path}")
        if self.layout is Layout.IMAGE_CLASS:
            self._writer.writerows((f"{image_id}_{c}", r) for c, r in zip(self.class_ids, rles, strict=True))
        else:
            self._writer.writerows((image_id, str(c), r) for c, r in zip(self.class_ids, rles, strict=True) if r)
        self._flush()
        self._seen.add(image_id)
        self.image_ids.append(image_id)

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        if self._file is not None:
            self._flush()
            self._file.close()
            self._file, self._writer = None, None

    def _flush(self) -> None:
        if self._file is None:
            return
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    def _prepare_append(self) -> None:
        data = self.path.read_bytes()
        if not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                raise AnnotationFormatError(self.path, 1, "cannot append: the header line is incomplete")
            logger.warning("%s: cutting a partial last line (%d bytes) before appending", self.path, len(data) - cut)
            with self.path.open("r+b") as f:
                f.truncate(cut)
            data = data[:cut]
        reader = csv.reader(data.decode("utf-8-sig").splitlines())
        found = _read_header(reader, self.path)
        if found is not self.layout:
            raise AnnotationFormatError(
                self.path, 1, f"cannot append {self.layout.name} rows to a {found.name} file ({found.value!r})"
            )
        for fields in reader:
            if fields and fields != [""]:
                image_id = _parse_row(fields, found, self.path, reader.line_num, self.class_ids)[0]
                if image_id not in self._seen:
                    self._seen.add(image_id)
                    self.image_ids.append(image_id)


def _read_header(reader: Iterable[list[str]], path: Path) -> Layout:
    header = next(iter(reader), None)
    columns = tuple(c.strip() for c in header) if header else ()
    for layout in Layout:
        if columns == layout.columns:
            return layout
    allowed = " or ".join(repr(layout.value) for layout in Layout)
    raise AnnotationFormatError(path, 1, f"unknown header {','.join(columns)!r}; expected {allowed}")


def _parse_row(
    fields: list[str], layout: Layout, path: Path, line: int, class_ids: Sequence[int] = CLASS_IDS
) -> tuple[str, int, str]:
    """``(image_id, class_id, rle)`` of one data row, or ``AnnotationFormatError``."""
    if len(fields) != len(layout.columns):
        raise AnnotationFormatError(
            path, line, f"expected {len(layout.columns)} fields ({layout.value}), got {len(fields)}: {fields!r}"
        )
    try:
        if layout is Layout.IMAGE_CLASS:
            image_id, class_id = split_image_class(fields[0].strip(), class_ids)
        else:
            image_id, class_text = fields[0].strip(), fields[1].strip()
            if class_text not in {str(c) for c in class_ids}:
                raise ValueError(f"class id {class_text!r} is not one of {list(class_ids)}")
            class_id = int(class_text)
    except ValueError as exc:
        raise AnnotationFormatError(path, line, str(exc)) from exc
    if not image_id:
        raise AnnotationFormatError(path, line, "empty image id")
    return image_id, class_id, fields[-1]
