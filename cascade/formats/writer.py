"""Writing submissions: a whole file at once, or one image at a time with flushes and crash-safe appending."""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from cascade.constants import CLASS_IDS
from cascade.formats.rows import (
    AnnotationFormatError,
    Layout,
    RowError,
    format_image_rows,
    parse_row,
    read_header,
    submission_header,
)

__all__ = ["SubmissionWriter", "write_submission"]

logger = logging.getLogger(__name__)


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

    def __enter__(self) -> SubmissionWriter:
        resuming = self.append and self.path.is_file() and self.path.stat().st_size > 0
        if resuming:
            self._prepare_append()
            self._file = self.path.open("a", newline="", encoding="utf-8")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", newline="", encoding="utf-8")
            self._file.write(submission_header(self.layout))
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
        if self._file is None:
            raise RuntimeError("SubmissionWriter is not open; use it as a context manager")
        if not isinstance(image_id, str) or not image_id or image_id != image_id.strip():
            raise ValueError(f"image id must be a non-empty string without surrounding spaces, got {image_id!r}")
        rows = format_image_rows(image_id, rles, self.layout, self.class_ids)
        if image_id in self._seen:
            raise ValueError(f"image {image_id!r} was already written to {self.path}")
        self._file.write(rows)
        self._flush()
        self._seen.add(image_id)
        self.image_ids.append(image_id)

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        if self._file is not None:
            self._flush()
            self._file.close()
            self._file = None

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
        reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
        found = read_header(reader, self.path)
        if found is not self.layout:
            raise AnnotationFormatError(
                self.path, 1, f"cannot append {self.layout.name} rows to a {found.name} file ({found.value!r})"
            )
        for fields in reader:
            if fields and fields != [""]:
                try:
                    image_id = parse_row(fields, found, self.class_ids)[0]
                except RowError as exc:
                    raise AnnotationFormatError(self.path, reader.line_num, str(exc)) from exc
                if image_id not in self._seen:
                    self._seen.add(image_id)
                    self.image_ids.append(image_id)
