"""Tests for cascade/formats/checker.py: one table-driven case per problem kind, with its line number."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cascade.formats import PROBLEM_KINDS, Layout, SubmissionProblem, check_submission, read_id_list

SHAPE = (4, 3)
IDS = ("a.jpg", "b.jpg")
HEADER = "ImageId_ClassId,EncodedPixels"
VALID_ROWS = ["a.jpg_1,1 2", "a.jpg_2,", "a.jpg_3,", "a.jpg_4,5 3", "b.jpg_1,", "b.jpg_2,", "b.jpg_3,12 1", "b.jpg_4,"]


def _check(tmp_path: Path, lines: list[str], **kwargs: object) -> list[SubmissionProblem]:
    path = tmp_path / "sub.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return check_submission(path, IDS, SHAPE, **kwargs)  # type: ignore[arg-type]


def _replace(line_no: int, text: str) -> list[str]:
    """The valid file with line ``line_no`` (1-based, header = 1) replaced."""
    lines = [HEADER, *VALID_ROWS]
    lines[line_no - 1] = text
    return lines


def test_valid_submission_has_no_problems(tmp_path: Path) -> None:
    assert _check(tmp_path, [HEADER, *VALID_ROWS]) == []
    assert _check(tmp_path, [HEADER, *reversed(VALID_ROWS), ""]) == []  # order and blank lines do not matter


CASES = [
    ("wrong header", _replace(1, "ImageId,EncodedPixels"), "header", 1, "expected 'ImageId_ClassId,EncodedPixels'"),
    ("field count", [HEADER, *VALID_ROWS, "a.jpg_2,1 1,x"], "field_count", 10, r"expected 2 fields .*got 3"),
    ("no class suffix", [HEADER, *VALID_ROWS, "a.jpg,"], "malformed_id", 10, "'a.jpg' is not '<image id>_<class id>'"),
    ("empty image", [HEADER, *VALID_ROWS, "_1,"], "malformed_id", 10, "'_1'"),
    ("class 5", [HEADER, *VALID_ROWS, "a.jpg_5,"], "bad_class_id", 10, r"class id '5' of 'a.jpg' is not one of"),
    ("class text", [HEADER, *VALID_ROWS, "b.jpg_x,"], "bad_class_id", 10, "class id 'x'"),
    ("duplicate", [HEADER, *VALID_ROWS, "b.jpg_3,"], "duplicate_row", 10, r"class 3 \(first at line 8\)"),
    ("extra image", [HEADER, *VALID_ROWS, *(f"c.jpg_{k}," for k in range(1, 5))], "extra_image", 10, "'c.jpg'"),
    ("missing image", [HEADER, *VALID_ROWS[:4]], "missing_image", 0, "'b.jpg' has no rows"),
    ("missing row", [HEADER, *VALID_ROWS[:7]], "missing_row", 6, r"'b.jpg' has no row for class ids \[4\]"),
    ("odd count", _replace(2, "a.jpg_1,1 2 3"), "rle_odd_count", 2, "odd number of tokens"),
    ("non-integer", _replace(2, "a.jpg_1,1 2.0"), "rle_non_integer", 2, r"token 2 \('2.0' at char 2\)"),
    ("start 0", _replace(2, "a.jpg_1,0 2"), "rle_start_below_1", 2, "start < 1"),
    ("length 0", _replace(2, "a.jpg_1,1 0"), "rle_length_below_1", 2, "length < 1"),
    ("unsorted", _replace(2, "a.jpg_1,5 1 1 1"), "rle_unsorted", 2, "unsorted"),
    ("overlap", _replace(2, "a.jpg_1,1 5 3 1"), "rle_overlap", 2, "overlapping"),
    ("out of range", _replace(2, "a.jpg_1,11 3"), "rle_out_of_range", 2, r"run 11\.\.13 goes past the last pixel 12"),
]


@pytest.mark.parametrize(("lines", "kind", "line", "match"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_problem_kind(tmp_path: Path, lines: list[str], kind: str, line: int, match: str) -> None:
    problems = _check(tmp_path, lines)
    assert [(p.kind, p.line) for p in problems] == [(kind, line)], problems
    assert problems[0].kind in PROBLEM_KINDS
    assert re.search(match, problems[0].message), problems[0].message


def test_every_problem_is_reported(tmp_path: Path) -> None:
    lines = [HEADER, "a.jpg_1,1 0", "a.jpg_2,x", "a.jpg_2,", "a.jpg_9,", "zzz", "c.jpg_1,"]
    problems = _check(tmp_path, lines)
    assert [(p.kind, p.line) for p in problems] == [
        ("rle_length_below_1", 2),
        ("rle_non_integer", 3),
        ("duplicate_row", 4),
        ("bad_class_id", 5),
        ("field_count", 6),
        ("extra_image", 7),
        ("missing_row", 2),
        ("missing_image", 0),
    ]


def test_long_layout(tmp_path: Path) -> None:
    lines = ["ImageId,ClassId,EncodedPixels", "a.jpg,1,1 2", "a.jpg,4,5 3", "b.jpg,3,12 1"]
    assert _check(tmp_path, lines, layout=Layout.LONG) == []
    assert _check(tmp_path, lines[:-1], layout=Layout.LONG) == []  # b.jpg without rows is clean, not missing
    problems = _check(tmp_path, [*lines, "b.jpg,3,1 1", "a.jpg,0,1 1"], layout=Layout.LONG)
    assert [(p.kind, p.line) for p in problems] == [("duplicate_row", 5), ("bad_class_id", 6)]
    problems = _check(tmp_path, lines)  # a LONG file where Kaggle's layout is expected: rows read as LONG
    assert [(p.kind, p.line, p.message[:30]) for p in problems] == [("header", 1, "header is 'ImageId,ClassId,Enc")]


def test_unreadable_csv_is_reported(tmp_path: Path) -> None:
    problems = _check(tmp_path, [HEADER, *VALID_ROWS[:4], 'b.jpg_1,"1 1', "b.jpg_2,"])
    assert [(p.kind, p.line) for p in problems] == [("csv", 7), ("missing_image", 0)]
    assert "unreadable CSV" in problems[0].message


def test_read_id_list(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("ImageId\na.jpg\n\n b.jpg \n", encoding="utf-8")
    assert read_id_list(path) == ("a.jpg", "b.jpg")
