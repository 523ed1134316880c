"""Tests for cascade/scoring/folder.py and sink.py: listing, row format, reading back and repairing outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade.formats import Layout, format_image_rows, submission_header, write_submission
from cascade.scoring.folder import (
    ERRORS_HEADER,
    ResumeError,
    ResumeState,
    errors_path,
    list_images,
    read_resume_state,
)
from cascade.scoring.sink import OrderedSink

RLES = ("1 3 10 2", "", "5 5", "")
IDS = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]


def _write(path: Path, layout: Layout, ids: list[str], errors: dict[str, str] | None = None) -> None:
    with OrderedSink(path, errors_path(path), ids, layout, ResumeState(), fsync=False) as sink:
        for image_id in ids:
            if errors and image_id in errors:
                sink.add_error(image_id, errors[image_id])
            else:
                sink.add_result(image_id, RLES)
        sink.commit()


def test_list_images_sorted_filtered(tmp_path: Path) -> None:
    for name in ("b.JPG", "a.png", "c.tiff", "d.bmp", "e.jpeg", "f.tif", "notes.txt", "x.gif"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.jpg").mkdir()
    assert list_images(tmp_path) == ["a.png", "b.JPG", "c.tiff", "d.bmp", "e.jpeg", "f.tif"]


def test_list_images_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="missing"):
        list_images(tmp_path / "missing")


def test_errors_path() -> None:
    assert errors_path(Path("out/submission.csv")) == Path("out/submission.errors.csv")


@pytest.mark.parametrize("layout", [Layout.IMAGE_CLASS, Layout.LONG])
def test_rows_match_write_submission(tmp_path: Path, layout: Layout) -> None:
    ours = tmp_path / "ours.csv"
    _write(ours, layout, IDS)
    theirs = tmp_path / "theirs.csv"
    write_submission(theirs, [(i, RLES) for i in IDS], layout=layout)
    assert ours.read_bytes() == theirs.read_bytes()
    assert ours.read_text().startswith(submission_header(layout))


def test_rows_need_four_rles() -> None:
    with pytest.raises(ValueError, match="expected 4"):
        format_image_rows("a.jpg", ["", ""], Layout.IMAGE_CLASS)


def test_resume_missing_file_is_fresh(tmp_path: Path) -> None:
    assert read_resume_state(tmp_path / "none.csv", Layout.IMAGE_CLASS, IDS) == ResumeState()


def test_resume_every_cut_point(tmp_path: Path) -> None:
    """Cut the full output at every byte: resuming keeps exactly the whole images before the cut."""
    full = tmp_path / "full.csv"
    _write(full, Layout.IMAGE_CLASS, IDS)
    data = full.read_bytes()
    header = len(submission_header(Layout.IMAGE_CLASS))
    image_len = len(format_image_rows("a.jpg", RLES, Layout.IMAGE_CLASS))
    cut_file = tmp_path / "cut.csv"
    for cut in range(len(data) + 1):
        cut_file.write_bytes(data[:cut])
        state = read_resume_state(cut_file, Layout.IMAGE_CLASS, IDS)
        whole = max(0, (cut - header) // image_len) if cut >= header else 0
        assert state.done == tuple(IDS[:whole]), cut
        assert state.csv_bytes == (header + whole * image_len if cut >= header else 0), cut


def test_resume_every_cut_point_with_quoted_ids(tmp_path: Path) -> None:
    """Ids with a comma, a quote and a newline are quoted by csv; resuming reads them back at every cut."""
    ids = sorted(["a,1.jpg", 'b"2.jpg', "c\n3.jpg", "d.jpg"])
    full = tmp_path / "full.csv"
    _write(full, Layout.IMAGE_CLASS, ids)
    data = full.read_bytes()
    ends = [len(submission_header(Layout.IMAGE_CLASS))]
    for image_id in ids:
        ends.append(ends[-1] + len(format_image_rows(image_id, RLES, Layout.IMAGE_CLASS).encode()))
    assert ends[-1] == len(data)
    cut_file = tmp_path / "cut.csv"
    for cut in range(len(data) + 1):
        cut_file.write_bytes(data[:cut])
        state = read_resume_state(cut_file, Layout.IMAGE_CLASS, ids)
        whole = sum(end <= cut for end in ends[1:])
        assert state.done == tuple(ids[:whole]), cut
        assert state.csv_bytes == (ends[whole] if cut >= ends[0] else 0), cut


# LONG has positive rows only: a (classes 1, 4), b (none), c (class 2), d (class 4).
_LONG_RLES = {
    "a.jpg": ("1 2", "", "", "7 1"),
    "b.jpg": ("", "", "", ""),
    "c.jpg": ("", "3 3", "", ""),
    "d.jpg": ("", "", "", "9 9"),
}


@pytest.mark.parametrize(
    ("rows_kept", "done", "kept_rows"),
    [
        (0, (), 0),
        (1, (), 0),  # a's class-1 row alone: a may have more rows, redo it
        (2, ("a.jpg",), 2),  # a ends with class 4: certain
        (3, ("a.jpg",), 2),  # c's row ends with class 2: c may have more, redo b and c
        (4, ("a.jpg", "b.jpg", "c.jpg", "d.jpg"), 4),
    ],
)
def test_resume_long_layout(tmp_path: Path, rows_kept: int, done: tuple[str, ...], kept_rows: int) -> None:
    path = tmp_path / "s.csv"
    write_submission(path, [(i, _LONG_RLES[i]) for i in IDS], layout=Layout.LONG)
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) == 5
    path.write_text("".join(lines[: 1 + rows_kept]) + "d.jp")  # plus a cut line
    state = read_resume_state(path, Layout.LONG, IDS)
    assert state.done == done
    assert state.csv_bytes == len("".join(lines[: 1 + kept_rows]).encode())


def test_resume_refuses_other_layout(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    _write(path, Layout.LONG, IDS[:2])
    with pytest.raises(ResumeError, match=r"ImageId_ClassId,EncodedPixels.*--overwrite"):
        read_resume_state(path, Layout.IMAGE_CLASS, IDS)


def test_resume_refuses_foreign_file(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("id,value\n1,2\n")
    with pytest.raises(ResumeError, match="header 'id,value'"):
        read_resume_state(path, Layout.IMAGE_CLASS, IDS)


def test_resume_refuses_binary_garbage(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_bytes(submission_header(Layout.IMAGE_CLASS).encode() + b"\xff\xfe.jpg_1,\n")
    with pytest.raises(ResumeError, match="not UTF-8"):
        read_resume_state(path, Layout.IMAGE_CLASS, IDS)


def test_resume_refuses_other_folder(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    _write(path, Layout.IMAGE_CLASS, ["zzz.jpg"])
    with pytest.raises(ResumeError, match=r"'zzz\.jpg' is in the existing output but not in the folder"):
        read_resume_state(path, Layout.IMAGE_CLASS, IDS)


def test_resume_refuses_images_added_before_the_last_done(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    _write(path, Layout.IMAGE_CLASS, ["a.jpg", "c.jpg"])
    with pytest.raises(ResumeError, match="folder changed"):
        read_resume_state(path, Layout.IMAGE_CLASS, IDS)


def test_resume_refuses_rows_out_of_order(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    text = format_image_rows("a.jpg", RLES, Layout.IMAGE_CLASS).splitlines(keepends=True)
    path.write_text(submission_header(Layout.IMAGE_CLASS) + text[1] + text[0])
    with pytest.raises(ResumeError, match="out of order"):
        read_resume_state(path, Layout.IMAGE_CLASS, IDS)


def test_resume_reads_errors_and_cuts_partial_error_line(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    _write(path, Layout.IMAGE_CLASS, IDS[:3], errors={"b.jpg": "bad, really\nbad", "c.jpg": "also bad"})
    err = errors_path(path)
    assert err.read_text() == ERRORS_HEADER + 'b.jpg,"bad, really bad"\nc.jpg,also bad\n'
    err.write_bytes(err.read_bytes()[:-3])
    state = read_resume_state(path, Layout.IMAGE_CLASS, IDS)
    assert state.done == ("a.jpg",)
    assert [e.image_id for e in state.errors] == ["b.jpg"]
    assert state.errors[0].reason == "bad, really bad"
    assert state.errors_bytes == len(ERRORS_HEADER + 'b.jpg,"bad, really bad"\n')


def test_sink_commits_in_listing_order(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    with OrderedSink(path, errors_path(path), IDS, Layout.IMAGE_CLASS, ResumeState(), fsync=False) as sink:
        sink.add_result("c.jpg", RLES)
        sink.add_error("b.jpg", "broken")
        assert sink.commit() == []
        sink.add_result("a.jpg", RLES)
        assert sink.commit() == ["a.jpg", "b.jpg", "c.jpg"]
        assert sink.remaining == 1
    state = read_resume_state(path, Layout.IMAGE_CLASS, IDS)
    assert state.done == ("a.jpg", "c.jpg")
    assert [e.image_id for e in state.errors] == ["b.jpg"]


def test_resume_refuses_rows_after_an_unfinished_image(tmp_path: Path) -> None:
    """A cut errors file followed by later rows cannot come from a crash (errors are written first)."""
    path = tmp_path / "s.csv"
    _write(path, Layout.IMAGE_CLASS, IDS, errors={"c.jpg": "bad"})
    errors_path(path).write_text(ERRORS_HEADER)
    with pytest.raises(ResumeError, match=r"first: 'c\.jpg'"):
        read_resume_state(path, Layout.IMAGE_CLASS, IDS)


def test_sink_fresh_start_removes_stale_errors(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    errors_path(path).write_text(ERRORS_HEADER + "old.jpg,gone\n")
    _write(path, Layout.IMAGE_CLASS, IDS)
    assert not errors_path(path).exists()
