"""One Kaggle CSV row, both ways: the header of each layout, an image's rows as text, a row's fields parsed.

Every writer (``SubmissionWriter``, folder scoring, ``/predict/batch``, ``cascade predict --out``) formats rows
with ``format_image_rows`` and every reader (``read_annotations``, ``check_submission``, resuming a folder run)
parses them with ``parse_row``, all through the ``csv`` module, so quoting is the same everywhere.
Class ids are parameters (default Severstal's four).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from enum import Enum
from pathlib import Path

from cascade.constants import CLASS_IDS

__all__ = [
    "ROW_ERROR_KINDS",
    "AnnotationFormatError",
    "Layout",
    "RowError",
    "csv_line",
    "format_image_rows",
    "layout_of",
    "parse_row",
    "read_header",
    "split_image_class",
    "submission_header",
]

# An RLE of a 1600x256 image can reach ~5 MB (a checkerboard); csv's default field limit is 128 KiB.
csv.field_size_limit(max(csv.field_size_limit(), 1 << 28))

ROW_ERROR_KINDS: tuple[str, ...] = ("field_count", "malformed_id", "bad_class_id")
"""Every value of ``RowError.kind``."""


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


class RowError(ValueError):
    """A data row that is not a row of its layout; ``kind`` is one of ``ROW_ERROR_KINDS``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def csv_line(fields: Iterable[str]) -> str:
    """One CSV line (``\\n``-terminated), quoted as ``csv.writer`` quotes."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue()


def submission_header(layout: Layout) -> str:
    """The header line (with its newline) of a submission in ``layout``."""
    return csv_line(layout.columns)


def layout_of(header: Sequence[str] | None) -> Layout | None:
    """The layout whose header is ``header`` (fields, surrounding spaces ignored), or None."""
    columns = tuple(c.strip() for c in header) if header else ()
    return next((layout for layout in Layout if columns == layout.columns), None)


def read_header(reader: Iterable[list[str]], path: str | Path) -> Layout:
    """Read the header row from ``reader`` (a ``csv.reader``); ``AnnotationFormatError`` unless it is a layout's."""
    header = next(iter(reader), None)
    layout = layout_of(header)
    if layout is None:
        shown = ",".join(c.strip() for c in header or ())
        allowed = " or ".join(repr(layout.value) for layout in Layout)
        raise AnnotationFormatError(path, 1, f"unknown header {shown!r}; expected {allowed}")
    return layout


def format_image_rows(
    image_id: str, rles: Sequence[str], layout: Layout = Layout.IMAGE_CLASS, class_ids: Sequence[int] = CLASS_IDS
) -> str:
    """One image's submission lines, each ``\\n``-terminated.

    Args:
        image_id: the image's file name.
        rles: one RLE string per class in ``class_ids`` order ('' = class absent).
        layout: ``Layout.IMAGE_CLASS`` (one ``<id>_<class>,rle`` line per class) or ``Layout.LONG`` (one
            ``<id>,<class>,rle`` line per non-empty RLE; none for an image without defects).
        class_ids: the class set's ids.

    Raises:
        ValueError: not one RLE string per class.
    """
    n = len(class_ids)
    if isinstance(rles, str) or len(rles) != n or not all(isinstance(r, str) for r in rles):
        got = f"{len(rles)} items" if not isinstance(rles, str) else "one string"
        raise ValueError(f"{image_id}: expected {n} RLE strings in class-id order {list(class_ids)}, got {got}")
    if layout is Layout.IMAGE_CLASS:
        return "".join(csv_line((f"{image_id}_{c}", rle)) for c, rle in zip(class_ids, rles, strict=True))
    return "".join(csv_line((image_id, str(c), rle)) for c, rle in zip(class_ids, rles, strict=True) if rle)


def split_image_class(value: str, class_ids: Sequence[int] = CLASS_IDS) -> tuple[str, int]:
    """Split ``'0002cc93b.jpg_1'`` into ``('0002cc93b.jpg', 1)``.

    Raises:
        RowError: no ``_<class id>`` suffix (``malformed_id``), or a class id not in ``class_ids``
            (``bad_class_id``).
    """
    image_id, sep, class_text = value.rpartition("_")
    if not sep or not image_id:
        raise RowError("malformed_id", f"ImageId_ClassId {value!r} is not '<image id>_<class id>'")
    return image_id, _class_id(class_text, image_id, class_ids)


def parse_row(fields: Sequence[str], layout: Layout, class_ids: Sequence[int] = CLASS_IDS) -> tuple[str, int, str]:
    """``(image_id, class_id, rle)`` of one data row's fields (as ``csv.reader`` yields them).

    The image id and class id are stripped of surrounding spaces; the RLE is returned as written.

    Raises:
        RowError: wrong number of fields, no image id, or a class id not in ``class_ids``.
    """
    n_columns = len(layout.columns)
    if len(fields) != n_columns:
        shown = ",".join(fields)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise RowError("field_count", f"expected {n_columns} fields ({layout.value}), got {len(fields)}: {shown!r}")
    if layout is Layout.IMAGE_CLASS:
        image_id, class_id = split_image_class(fields[0].strip(), class_ids)
    else:
        image_id = fields[0].strip()
        if not image_id:
            raise RowError("malformed_id", "empty ImageId")
        class_id = _class_id(fields[1].strip(), image_id, class_ids)
    return image_id, class_id, fields[-1]


def _class_id(text: str, image_id: str, class_ids: Sequence[int]) -> int:
    if text not in {str(c) for c in class_ids}:
        raise RowError("bad_class_id", f"class id {text!r} of {image_id!r} is not one of {list(class_ids)}")
    return int(text)
