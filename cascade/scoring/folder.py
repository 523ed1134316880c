"""Listing a folder of images and reading back what an interrupted run already wrote.

The output of a folder run is a submission CSV (rows of finished images, in listing order) plus an
errors CSV (``file,reason``, the unreadable images, in listing order). Both are written append-only
and fsync'ed per batch, errors first, so after a crash (Ctrl-C, ``kill -9``) each file is a prefix of
the file an uninterrupted run writes, possibly followed by a cut line. ``read_resume_state`` finds the
longest valid prefix of each (whole lines; whole images for the submission), checks that the header
matches the requested layout and returns what is done, so the run can continue where it stopped and end
with byte-identical files. In ``Layout.IMAGE_CLASS`` every image has four rows; ``Layout.LONG`` has only
positive rows, so there every image up to the last one with rows counts as done, and that last one only
when its rows end with class 4 (otherwise it and the images after it are predicted again).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cascade.constants import CLASS_IDS
from cascade.formats import IMAGE_SUFFIXES, Layout, RowError, csv_line, parse_row, submission_header
from cascade.scoring.summary import ImageError

__all__ = [
    "ERRORS_HEADER",
    "SUPPORTED_SUFFIXES",
    "ResumeError",
    "ResumeState",
    "errors_path",
    "format_error_line",
    "list_images",
    "read_resume_state",
]

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES: tuple[str, ...] = IMAGE_SUFFIXES
"""File suffixes (case-insensitive) that ``list_images`` picks up."""

ERRORS_HEADER: str = "file,reason\n"
"""Header line of the errors CSV."""


class ResumeError(ValueError):
    """An existing output cannot be resumed (other layout, other folder, not written by this tool)."""


@dataclass(frozen=True)
class ResumeState:
    """What an earlier run left behind.

    Attributes:
        done: image ids whose four rows are in the submission, in file order.
        errors: unreadable images recorded in the errors file, in file order.
        csv_bytes: length of the submission's valid prefix (0: start afresh, header included otherwise).
        errors_bytes: length of the errors file's valid prefix (0: none or start afresh).
    """

    done: tuple[str, ...] = ()
    errors: tuple[ImageError, ...] = ()
    csv_bytes: int = 0
    errors_bytes: int = 0


def list_images(images_dir: str | Path) -> list[str]:
    """File names of the images directly inside ``images_dir``, sorted (the scoring order).

    Args:
        images_dir: a folder; files whose suffix is in ``SUPPORTED_SUFFIXES`` are listed, sub-folders are not entered.

    Returns:
        Sorted file names (not paths).

    Raises:
        NotADirectoryError: ``images_dir`` is not a folder.
    """
    folder = Path(images_dir)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder of images (expected a directory)")
    names: list[str] = []
    others = 0
    for entry in folder.iterdir():
        if not entry.is_file():
            continue
        if entry.suffix.lower() in SUPPORTED_SUFFIXES:
            names.append(entry.name)
        else:
            others += 1
    if others:
        logger.info("%s: skipped %d files whose suffix is not one of %s", folder, others, ", ".join(SUPPORTED_SUFFIXES))
    return sorted(names)


def errors_path(out_csv: str | Path) -> Path:
    """The errors CSV next to a submission: ``submission.csv`` -> ``submission.errors.csv``."""
    out_csv = Path(out_csv)
    return out_csv.with_name(f"{out_csv.stem}.errors.csv")


def format_error_line(image_id: str, reason: str) -> str:
    """One errors-CSV line; the reason is folded onto a single line."""
    return csv_line((image_id, " ".join(reason.split())))


def _records(data: bytes, start: int, path: Path) -> Iterator[tuple[list[str], int, int]]:
    """``(fields, line number, byte offset just after it)`` of each complete CSV record of ``data[start:]``.

    Only newline-terminated lines are read, so a cut last line is left out; a record cut inside a quoted field
    that spans lines (an image id with a newline) ends the records too. Lines are numbered from 2 (after the header).
    """
    lines: list[str] = []
    ends: list[int] = []
    pos = start
    while (nl := data.find(b"\n", pos)) >= 0:
        lines.append(data[pos : nl + 1].decode("utf-8"))
        ends.append(nl + 1)
        pos = nl + 1
    reader = csv.reader(lines, strict=True)
    first = 0  # lines consumed before the current record
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if reader.line_num == len(lines):  # an open quote at the end: the record was cut
                return
            raise ResumeError(
                f"{path}:{first + 2}: unreadable CSV ({exc}); pass overwrite (--overwrite) to replace it"
            ) from exc
        yield fields, first + 2, ends[reader.line_num - 1]
        first = reader.line_num


def _parse_row(fields: list[str], layout: Layout, class_ids: Sequence[int], path: Path, lineno: int) -> tuple[str, int]:
    try:
        image_id, class_id, _ = parse_row(fields, layout, class_ids)
    except RowError as exc:
        shown = csv_line(fields).rstrip("\n")
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise ResumeError(
            f"{path}:{lineno}: {shown!r} is not a {layout.name} submission row ({exc}); "
            "pass overwrite (--overwrite) to replace it"
        ) from exc
    return image_id, class_id


def _check_header(data: bytes, header: str, path: Path, what: str) -> bool:
    """True when ``data`` starts with ``header``; False when it is a cut prefix of it (start afresh)."""
    encoded = header.encode()
    if data.startswith(encoded):
        return True
    if encoded.startswith(data):
        return False
    first = data.split(b"\n", 1)[0].decode("utf-8", "replace")
    raise ResumeError(
        f"{path}: header {first!r} does not match {header.strip()!r} ({what}); "
        "refusing to append to it; pass overwrite (--overwrite) to replace it or choose another --out"
    )


def _read_submission(path: Path, layout: Layout, class_ids: Sequence[int] = CLASS_IDS) -> tuple[tuple[str, ...], int]:
    """Images whose rows are certainly all in ``path``, in file order, and the byte length of those rows.

    An image's rows are in class order; in ``IMAGE_CLASS`` there are four, in ``LONG`` only the positive ones,
    so there the last image is certain only when its last row is class 4 (else it is dropped and redone).
    """
    data = path.read_bytes()
    header = submission_header(layout)
    if not _check_header(data, header, path, f"the {layout.name} layout"):
        return (), 0
    ids = list(class_ids)
    done: list[str] = []
    valid = len(header.encode())  # end of the last certainly complete image
    previous_end = valid
    current: str | None = None
    last_cid = 0
    for fields, lineno, end in _records(data, len(header.encode()), path):
        image_id, cid = _parse_row(fields, layout, ids, path, lineno)
        if image_id != current and current is not None and layout is Layout.IMAGE_CLASS and last_cid != ids[-1]:
            raise ResumeError(
                f"{path}:{lineno}: {current!r} lacks rows after class {last_cid} (classes {ids}); "
                "pass overwrite (--overwrite)"
            )
        if image_id != current:
            if current is not None:
                done.append(current)
                valid = previous_end
            current, last_cid = image_id, 0
        if layout is Layout.IMAGE_CLASS:
            expected_ok = ids.index(cid) == (ids.index(last_cid) + 1 if last_cid else 0)
        else:
            expected_ok = last_cid < cid
        if not expected_ok:
            raise ResumeError(
                f"{path}:{lineno}: row for {image_id!r} class {cid} is out of order after class {last_cid}; "
                "pass overwrite (--overwrite) to replace it"
            )
        last_cid = cid
        previous_end = end
    if current is not None and last_cid == ids[-1]:
        done.append(current)
        valid = previous_end
    return tuple(done), valid


def _read_errors(path: Path) -> tuple[tuple[ImageError, ...], int]:
    data = path.read_bytes()
    if not _check_header(data, ERRORS_HEADER, path, "an errors list"):
        return (), 0
    errors = []
    valid = len(ERRORS_HEADER)
    for fields, lineno, end in _records(data, len(ERRORS_HEADER), path):
        if len(fields) != 2:
            shown = csv_line(fields).rstrip("\n")[:80]
            raise ResumeError(f"{path}:{lineno}: {shown!r} is not a 'file,reason' line; pass overwrite to replace it")
        errors.append(ImageError(fields[0], fields[1]))
        valid = end
    return tuple(errors), valid


def read_resume_state(
    out_csv: str | Path, layout: Layout, image_ids: Sequence[str], class_ids: Sequence[int] = CLASS_IDS
) -> ResumeState:
    """Read what an earlier run of the same job left in ``out_csv`` and its errors file.

    Args:
        out_csv: the submission path.
        layout: the layout the run writes; an existing file in another layout is refused.
        image_ids: the folder listing, in scoring order.
        class_ids: the bundle's class ids (the rows each image has).

    Returns:
        The finished images and the valid byte lengths to truncate both files to.

    Raises:
        ResumeError: the existing output does not belong to this job (header, row order, images not in the folder,
            or images added to the folder that sort before the last finished one).
    """
    out_csv = Path(out_csv)
    if not out_csv.is_file():
        return ResumeState()
    err_path = errors_path(out_csv)
    try:
        done, csv_bytes = _read_submission(out_csv, layout, class_ids)
        if csv_bytes == 0:
            return ResumeState()
        errors, errors_bytes = _read_errors(err_path) if err_path.is_file() else ((), 0)
    except UnicodeDecodeError as exc:
        raise ResumeError(f"{out_csv} or {err_path} is not UTF-8 text ({exc}); pass overwrite (--overwrite)") from exc
    position = {name: i for i, name in enumerate(image_ids)}
    for name in [*done, *(e.image_id for e in errors)]:
        if name not in position:
            raise ResumeError(
                f"{out_csv}: {name!r} is in the existing output but not in the folder; "
                "is this the output of another folder? pass overwrite (--overwrite) to start afresh"
            )
    order = [position[name] for name in done]
    if order != sorted(order) or len(set(order)) != len(order):
        raise ResumeError(f"{out_csv}: existing rows are not in file-name order; pass overwrite (--overwrite)")
    failed = {e.image_id for e in errors}
    if done and layout is Layout.LONG:
        # Images without defects have no rows: every image up to the last one with rows is done.
        done = tuple(n for n in image_ids[: position[done[-1]] + 1] if n not in failed)
    elif done:
        finished = set(done) | failed
        earlier = [n for n in image_ids[: position[done[-1]]] if n not in finished]
        if earlier:
            raise ResumeError(
                f"{out_csv}: {len(earlier)} image(s) not yet scored (first: {earlier[0]!r}) sort before the last "
                f"finished one {done[-1]!r}: the folder changed since the interrupted run; pass overwrite (--overwrite)"
            )
    return ResumeState(done=done, errors=errors, csv_bytes=csv_bytes, errors_bytes=errors_bytes)
