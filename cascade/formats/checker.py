"""Submission checker: every problem the Kaggle checker would reject, each with its line number.

The Severstal submission is ``ImageId_ClassId,EncodedPixels`` with exactly four rows per test image
(``<image>_<class id>``, class ids 1..4, blank RLE for none). ``check_submission`` reads the whole file
and reports all problems instead of stopping at the first. Rows are parsed by ``cascade.formats.rows.parse_row``,
the definition every reader and writer uses.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cascade.constants import CLASS_IDS, IMAGE_SHAPE
from cascade.formats.rows import ROW_ERROR_KINDS, Layout, RowError, layout_of, parse_row
from cascade.rle import RLE_ERROR_KINDS, RLEError, decode_runs

__all__ = ["PROBLEM_KINDS", "SubmissionProblem", "check_submission", "read_id_list"]

PROBLEM_KINDS: tuple[str, ...] = (
    "header",
    "csv",
    *ROW_ERROR_KINDS,  # field_count, malformed_id, bad_class_id: what cascade.formats.parse_row refuses
    "duplicate_row",
    "extra_image",
    "missing_image",
    "missing_row",
    *(f"rle_{kind}" for kind in RLE_ERROR_KINDS),
)
"""Every value of ``SubmissionProblem.kind``; RLE problems are ``rle_<RLEError.kind>``."""


@dataclass(frozen=True)
class SubmissionProblem:
    """One problem in a submission file.

    Attributes:
        line: 1-based line number in the file (0 for a problem of the file as a whole, e.g. a missing image).
        kind: one of ``PROBLEM_KINDS``.
        message: what is wrong, naming the offending value.
    """

    line: int
    kind: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: [{self.kind}] {self.message}" if self.line else f"[{self.kind}] {self.message}"


def check_submission(
    path: str | Path,
    image_ids: Iterable[str],
    shape: tuple[int, int] | None = IMAGE_SHAPE,
    *,
    layout: Layout = Layout.IMAGE_CLASS,
    shapes: Mapping[str, tuple[int, int]] | None = None,
    class_ids: Sequence[int] = CLASS_IDS,
) -> list[SubmissionProblem]:
    """Check a submission CSV against the expected images.

    Args:
        path: the submission.
        image_ids: every image the submission must cover (file names, e.g. ``0002cc93b.jpg``).
        shape: ``(H, W)`` of images ``shapes`` does not list; runs past ``H * W`` are a problem (None: unchecked).
        layout: the expected layout; with ``Layout.LONG`` (positive rows only) images without rows are clean,
            so missing images and rows are not problems.
        shapes: ``(H, W)`` per image (e.g. read from ``--images``), for sets of mixed sizes.
        class_ids: the class ids every image must have a row for (``IMAGE_CLASS``) and that rows may name.

    Returns:
        Problems in line order, file-level ones (missing images and rows) last; empty when the file is valid.
    """
    path = Path(path)
    expected = list(dict.fromkeys(image_ids))
    sizes = {i: int(h) * int(w) for i, (h, w) in (shapes or {}).items()}
    default = None if shape is None else int(shape[0]) * int(shape[1])
    checker = _RowChecker(layout, default, set(expected), sizes, tuple(class_ids))
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(f, strict=True)  # unbalanced quotes are an error, as for Kaggle's CSV parser
        try:
            checker.check_header(next(reader, None))
            for fields in reader:
                if fields and fields != [""]:
                    checker.check_row(fields, reader.line_num)
        except csv.Error as exc:
            checker.add(reader.line_num, "csv", f"unreadable CSV: {exc}; checking stopped")
    for image_id in expected:
        if image_id not in checker.image_lines:
            if layout is Layout.LONG:  # a clean image has no rows in this layout
                continue
            checker.add(0, "missing_image", f"image {image_id!r} has no rows")
        elif checker.layout is Layout.IMAGE_CLASS:
            absent = [c for c in checker.class_ids if (image_id, c) not in checker.first_line]
            if absent:
                message = f"image {image_id!r} has no row for class ids {absent}"
                checker.add(checker.image_lines[image_id], "missing_row", message)
    return checker.problems


def read_id_list(path: str | Path) -> tuple[str, ...]:
    """Image ids from a text file, one per line (blank lines and an ``ImageId`` header are skipped)."""
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8-sig").splitlines()]
    ids = [line.split(",")[0].strip() for line in lines if line]
    if ids and ids[0].lower() in {"imageid", "image_id"}:
        ids = ids[1:]
    return tuple(ids)


class _RowChecker:
    """State of one check: problems so far, and where each image and (image, class) row was first seen."""

    def __init__(
        self,
        layout: Layout,
        n_pixels: int | None,
        expected: set[str],
        sizes: Mapping[str, int],
        class_ids: tuple[int, ...],
    ) -> None:
        self.layout = layout  # becomes the header's own layout when the header is the other known one
        self.n_pixels = n_pixels
        self.sizes = sizes
        self.class_ids = class_ids
        self.expected = expected
        self.problems: list[SubmissionProblem] = []
        self.first_line: dict[tuple[str, int], int] = {}
        self.image_lines: dict[str, int] = {}

    def add(self, line: int, kind: str, message: str) -> None:
        self.problems.append(SubmissionProblem(line, kind, message))

    def check_header(self, header: list[str] | None) -> None:
        columns = tuple(c.strip() for c in header) if header else ()
        if columns != self.layout.columns:
            self.add(1, "header", f"header is {','.join(columns)!r}, expected {self.layout.value!r}")
            self.layout = layout_of(header) or self.layout

    def check_row(self, fields: list[str], line: int) -> None:
        try:
            image_id, class_id, text = parse_row(fields, self.layout, self.class_ids)
        except RowError as exc:
            self.add(line, exc.kind, str(exc))
            return
        if image_id not in self.image_lines:
            self.image_lines[image_id] = line
            if image_id not in self.expected:
                self.add(line, "extra_image", f"image {image_id!r} is not in the image list")
        first = self.first_line.setdefault((image_id, class_id), line)
        if first != line:
            message = f"second row for image {image_id!r} class {class_id} (first at line {first})"
            self.add(line, "duplicate_row", message)
        if text.strip():
            try:
                decode_runs(text, n_pixels=self.sizes.get(image_id, self.n_pixels))
            except RLEError as exc:
                self.add(line, f"rle_{exc.kind}", f"{image_id} class {class_id}: {exc}")
