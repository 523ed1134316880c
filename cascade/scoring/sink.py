"""Committing results to the submission and errors files in listing order, durably.

Results may arrive out of order (Ray workers finish when they finish); ``OrderedSink`` buffers them and
appends the longest ready run of the listing order, errors file first, then the submission, each
flushed and fsync'ed. That write order keeps the invariant ``read_resume_state`` relies on: every image
that sorts before the last submission row is finished.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from cascade.constants import CLASS_IDS
from cascade.formats import Layout, format_image_rows, submission_header
from cascade.scoring.folder import ERRORS_HEADER, ResumeState, format_error_line
from cascade.scoring.summary import ImageError

__all__ = ["OrderedSink"]

logger = logging.getLogger(__name__)


def _open_truncated(path: Path, keep: int) -> BinaryIO:
    """Open ``path`` for appending after cutting it to its first ``keep`` bytes."""
    handle = path.open("r+b")
    handle.truncate(keep)
    handle.seek(keep)
    return handle


class OrderedSink:
    """Append-only, crash-safe writer of one folder run's submission and errors files.

    Args:
        out_csv: the submission path (parent folders are created).
        errors_csv: the errors list path (created at the first error; a stale one is removed on a fresh start).
        pending: image ids still to write, in listing order.
        layout: submission layout.
        state: what an earlier run left (``ResumeState()`` starts afresh, replacing both files).
        fsync: fsync after each commit (turn off only for throwaway outputs).
    """

    def __init__(
        self,
        out_csv: Path,
        errors_csv: Path,
        pending: Sequence[str],
        layout: Layout,
        state: ResumeState,
        *,
        fsync: bool = True,
        class_ids: Sequence[int] = CLASS_IDS,
    ) -> None:
        self.out_csv = Path(out_csv)
        self.errors_csv = Path(errors_csv)
        self._layout = layout
        self._class_ids = tuple(class_ids)
        self._pending = list(pending)
        self._next = 0
        self._ready: dict[str, tuple[Sequence[str] | None, str | None]] = {}
        self._fsync = fsync
        self.errors: list[ImageError] = list(state.errors)
        self.out_csv.parent.mkdir(parents=True, exist_ok=True)
        if state.csv_bytes:
            self._csv = _open_truncated(self.out_csv, state.csv_bytes)
        else:
            self._csv = self.out_csv.open("wb")
            self._csv.write(submission_header(layout).encode())
            self._sync(self._csv)
        self._err: BinaryIO | None = None
        if state.errors_bytes:
            self._err = _open_truncated(self.errors_csv, state.errors_bytes)
        elif self.errors_csv.exists():
            self.errors_csv.unlink()

    @property
    def remaining(self) -> int:
        """Images of ``pending`` not yet committed."""
        return len(self._pending) - self._next

    def add_result(self, image_id: str, rles: Sequence[str]) -> None:
        """Queue one image's RLE strings (one per class, class-id order)."""
        self._ready[image_id] = (list(rles), None)

    def add_error(self, image_id: str, reason: str) -> None:
        """Queue one unreadable image."""
        self._ready[image_id] = (None, reason)

    def commit(self) -> list[str]:
        """Write every queued image that is next in listing order; returns the ids written."""
        rows: list[str] = []
        errs: list[str] = []
        written: list[str] = []
        while self._next < len(self._pending) and self._pending[self._next] in self._ready:
            image_id = self._pending[self._next]
            rles, reason = self._ready.pop(image_id)
            if rles is None:
                errs.append(format_error_line(image_id, reason or "unknown error"))
                self.errors.append(ImageError(image_id, " ".join((reason or "unknown error").split())))
            else:
                rows.append(format_image_rows(image_id, rles, self._layout, self._class_ids))
            written.append(image_id)
            self._next += 1
        if errs:
            if self._err is None:
                self._err = self.errors_csv.open("wb")
                self._err.write(ERRORS_HEADER.encode())
            self._err.write("".join(errs).encode())
            self._sync(self._err)
        if rows:
            self._csv.write("".join(rows).encode())
            self._sync(self._csv)
        return written

    def _sync(self, handle: BinaryIO) -> None:
        handle.flush()
        if self._fsync:
            os.fsync(handle.fileno())

    def close(self) -> None:
        """Close both files (queued but uncommitted results are dropped)."""
        if self._ready:
            logger.debug("closing with %d uncommitted results", len(self._ready))
        self._csv.close()
        if self._err is not None:
            self._err.close()

    def __enter__(self) -> OrderedSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
