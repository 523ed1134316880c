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
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cascade.constants import CLASS_IDS
from cascade.formats import IMAGE_SUFFIXES, Layout
from cascade.scoring.summary import ImageError

__all__ = [
    "ERRORS_HEADER",
    "SUPPORTED_SUFFIXES",
    "ResumeError",
    "ResumeState",
    "errors_path",
    "format_error_line",
    "format_image_rows",
    "list_images",
    "read_resume_state",
    "submission_header",
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


def _csv_line(fields: Sequence[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue()


def submission_header(layout: Layout) -> str:
    """The header line (with its newline) of a submission in ``layout``."""
    return _csv_line(layout.columns)


def format_image_rows(image_id: str, rles: Sequence[str], layout: Layout, class_ids: Sequence[int] = CLASS_IDS) -> str:
    """One image's submission lines, newline-terminated, as ``cascade.formats.write_submission`` writes them.

    Args:
        image_id: the image's file name.
        rles: one RLE string per class in ``class_ids`` order ('' = class absent).
        layout: ``Layout.IMAGE_CLASS`` (one ``<id>_<class>,rle`` line per class) or ``Layout.LONG`` (one
            ``<id>,<class>,rle`` line per non-empty RLE; none for an image without defects).
        class_ids: the bundle's class ids.
    """
    if len(rles) != len(class_ids):
        raise ValueError(f"{image_id}: got {len(rles)} RLE strings, expected {len(class_ids)} (one per class)")
    if layout is Layout.IMAGE_CLASS:
        return "".join(_csv_line((f"{image_id}_{cid}", rle)) for cid, rle in zip(class_ids, rles, strict=True))
    return "".join(_csv_line((image_id, str(cid), rle)) for cid, rle in zip(class_ids, rles, strict=True) if rle)


def format_error_line(image_id: str, reason: str) -> str:
    """One errors-CSV line; the reason is folded onto a single line."""
    return _csv_line((image_id, " ".join(reason.split())))


def _complete_lines(data: bytes, start: int) -> tuple[list[str], list[int]]:
    """Newline-terminated lines of ``data[start:]`` and the byte offset just after each."""
    lines: list[str] = []
    ends: list[int] = []
    pos = start
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            return lines, ends
        lines.append(data[pos:nl].decode("utf-8"))
        ends.append(nl + 1)
        pos = nl + 1


def _unquote(field: str) -> str:
    """Undo csv quoting of one field (the image id; RLE fields are never quoted)."""
    if len(field) >= 2 and field[0] == field[-1] == '"':
        return field[1:-1].replace('""', '"')
    return field


def _parse_row(line: str, layout: Layout, path: Path, lineno: int) -> tuple[str, int]:
    # Split from the right: RLE and class fields hold no commas, the image id may (quoted). No csv module here:
    # an RLE can be megabytes long, beyond its field size limit.
    try:
        if layout is Layout.IMAGE_CLASS:
            head, sep, _ = line.rpartition(",")
            image_id, _, cid = _unquote(head).rpartition("_")
            if sep and image_id:
                return image_id, int(cid)
        else:
            parts = line.rsplit(",", 2)
            if len(parts) == 3 and parts[0]:
                return _unquote(parts[0]), int(parts[1])
    except ValueError:
        pass
    shown = line if len(line) <= 80 else line[:77] + "..."
    raise ResumeError(
        f"{path}:{lineno}: {shown!r} is not a {layout.name} submission row; pass overwrite (--overwrite) to replace it"
    )


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
    lines, ends = _complete_lines(data, len(header.encode()))
    ids = list(class_ids)
    done: list[str] = []
    valid = len(header.encode())  # end of the last certainly complete image
    current: str | None = None
    last_cid = 0
    for i, line in enumerate(lines):
        image_id, cid = _parse_row(line, layout, path, i + 2)
        if image_id != current and current is not None and layout is Layout.IMAGE_CLASS and last_cid != ids[-1]:
            raise ResumeError(
                f"{path}:{i + 2}: {current!r} lacks rows after class {last_cid} (classes {ids}); "
                "pass overwrite (--overwrite)"
            )
        if image_id != current:
            if current is not None:
                done.append(current)
                valid = ends[i - 1]
            current, last_cid = image_id, 0
        if layout is Layout.IMAGE_CLASS:
            expected_ok = cid in ids and ids.index(cid) == (ids.index(last_cid) + 1 if last_cid else 0)
        else:
            expected_ok = cid in ids and last_cid < cid
        if not expected_ok:
            raise ResumeError(
                f"{path}:{i + 2}: row for {image_id!r} class {cid} is out of order after class {last_cid}; "
                "pass overwrite (--overwrite) to replace it"
            )
        last_cid = cid
    if current is not None and last_cid == ids[-1]:
        done.append(current)
        valid = ends[-1]
    return tuple(done), valid


def _read_errors(path: Path) -> tuple[tuple[ImageError, ...], int]:
    data = path.read_bytes()
    if not _check_header(data, ERRORS_HEADER, path, "an errors list"):
        return (), 0
    lines, ends = _complete_lines(data, len(ERRORS_HEADER))
    errors = []
    for i, line in enumerate(lines):
        fields = next(csv.reader([line]), [])
        if len(fields) != 2:
            raise ResumeError(f"{path}:{i + 2}: {line!r} is not a 'file,reason' line; pass overwrite to replace it")
        errors.append(ImageError(fields[0], fields[1]))
    return tuple(errors), ends[-1] if ends else len(ERRORS_HEADER)


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
