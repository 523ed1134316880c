"""Tests for cascade/formats/ (rows, annotations, writer): both CSV layouts, malformed files, submission writing
and appending."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from cascade.formats import (
    ROW_ERROR_KINDS,
    AnnotationFormatError,
    Annotations,
    Layout,
    RowError,
    SubmissionWriter,
    format_image_rows,
    list_image_ids,
    parse_row,
    read_annotations,
    split_image_class,
    submission_header,
    write_submission,
)
from cascade.synth import SynthDataset

SHAPE = (4, 3)
IMAGE_CLASS_CSV = """ImageId_ClassId,EncodedPixels
b.jpg_1,1 2
b.jpg_2,
b.jpg_3,
b.jpg_4,5 3
a.jpg_1,
a.jpg_2,
a.jpg_3,
a.jpg_4,
"""
LONG_CSV = """ImageId,ClassId,EncodedPixels
b.jpg,1,1 2
b.jpg,4,5 3
c.jpg,3,12 1
"""


def _write(tmp_path: Path, text: str, name: str = "f.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_image_class_layout(tmp_path: Path) -> None:
    ann = read_annotations(_write(tmp_path, IMAGE_CLASS_CSV), shape=SHAPE)
    assert ann.layout is Layout.IMAGE_CLASS
    assert ann.image_ids == ("b.jpg", "a.jpg")
    assert ann.rles["b.jpg"] == ("1 2", "", "", "5 3")
    assert ann.rles["a.jpg"] == ("", "", "", "")
    np.testing.assert_array_equal(ann.labels(), [[True, False, False, True], [False, False, False, False]])
    assert ann.class_counts() == (1, 0, 0, 1)
    masks = ann.masks("b.jpg", SHAPE)
    assert masks.shape == (4, *SHAPE)
    assert masks.sum(axis=(1, 2)).tolist() == [2, 0, 0, 3]
    assert masks[0, 0, 0] and masks[0, 1, 0] and masks[3, 0, 1]


def test_read_long_layout_and_clean_images(tmp_path: Path) -> None:
    path = _write(tmp_path, LONG_CSV)
    ann = read_annotations(path)
    assert ann.layout is Layout.LONG
    assert ann.image_ids == ("b.jpg", "c.jpg")
    assert ann.rles["c.jpg"] == ("", "", "12 1", "")
    full = read_annotations(path, ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    assert full.image_ids == ("a.jpg", "b.jpg", "c.jpg", "d.jpg")
    assert full.rles["d.jpg"] == ("", "", "", "")
    assert full.class_counts() == (1, 0, 1, 1)
    images = tmp_path / "images"
    images.mkdir()
    for name in ("c.jpg", "b.jpg", "z.png", "notes.txt"):
        (images / name).write_bytes(b"")
    assert list_image_ids(images) == ("b.jpg", "c.jpg", "z.png")
    assert read_annotations(path, images_dir=images).image_ids == ("b.jpg", "c.jpg", "z.png")
    with pytest.raises(ValueError, match=r"1 annotated images are not in the image list.*c\.jpg"):
        read_annotations(path, ["b.jpg"])
    with pytest.raises(ValueError, match="not both"):
        read_annotations(path, ["b.jpg"], images_dir=images)


def test_both_layouts_give_the_same_annotations(tmp_path: Path) -> None:
    wide = read_annotations(_write(tmp_path, IMAGE_CLASS_CSV, "wide.csv"))
    long = read_annotations(_write(tmp_path, LONG_CSV.replace("c.jpg,3,12 1\n", ""), "long.csv"), ["b.jpg", "a.jpg"])
    assert wide.rles == long.rles
    assert wide.image_ids == long.image_ids


def test_bom_blank_lines_and_spaces_in_header(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_text("\ufeffImageId, ClassId ,EncodedPixels\n\nb.jpg,1,1 2\n\n", encoding="utf-8")
    assert read_annotations(path).rles["b.jpg"] == ("1 2", "", "", "")


BAD_FILES = [
    ("unknown header", "Image,Class,RLE\n", 1, "unknown header 'Image,Class,RLE'; expected 'ImageId_ClassId,Encoded"),
    ("empty file", "", 1, "unknown header ''"),
    ("field count", LONG_CSV + "d.jpg,1\n", 5, "expected 3 fields"),
    ("class id 5", LONG_CSV + "d.jpg,5,1 1\n", 5, r"class id '5' of 'd.jpg' is not one of \[1, 2, 3, 4\]"),
    ("class id text", LONG_CSV + "d.jpg,x,1 1\n", 5, "class id 'x'"),
    ("no class suffix", IMAGE_CLASS_CSV + "d.jpg,1 1\n", 10, "is not '<image id>_<class id>'"),
    ("bad class suffix", IMAGE_CLASS_CSV + "d.jpg_0,1 1\n", 10, "class id '0'"),
    ("duplicate", LONG_CSV + "b.jpg,4,1 1\n", 5, r"duplicate row for image 'b.jpg' class 4 \(first at line 3\)"),
    ("bad rle", LONG_CSV + "d.jpg,2,1 2 3\n", 5, "d.jpg class 2: invalid RLE: odd number of tokens"),
    ("rle past the end", LONG_CSV + "d.jpg,2,12 2\n", 5, "goes past the last pixel 12"),
]


@pytest.mark.parametrize(("text", "line", "match"), [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES])
def test_malformed_files_name_the_line(tmp_path: Path, text: str, line: int, match: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(AnnotationFormatError, match=match) as info:
        read_annotations(path, shape=SHAPE)
    assert info.value.line == line
    assert str(info.value).startswith(f"{path}:{line}: ")


ODD_IDS = ("comma,in.jpg", 'quote"in.jpg', "new\nline.jpg", " spaced.jpg", "plain_2.jpg")


@pytest.mark.parametrize("layout", list(Layout))
@pytest.mark.parametrize("class_ids", [(1, 2, 3, 4), (3, 7)])
def test_rows_round_trip_through_csv(layout: Layout, class_ids: tuple[int, ...]) -> None:
    rles = tuple("1 2" if k % 2 == 0 else "" for k in range(len(class_ids)))
    for image_id in ODD_IDS:
        text = format_image_rows(image_id, rles, layout, class_ids)
        rows = list(csv.reader(text.splitlines(keepends=True)))
        parsed = [parse_row(fields, layout, class_ids) for fields in rows]
        expected = [(c, r) for c, r in zip(class_ids, rles, strict=True) if r or layout is Layout.IMAGE_CLASS]
        assert [(cid, rle) for _, cid, rle in parsed] == expected, image_id
        assert {i for i, _, _ in parsed} == {image_id.strip()}  # ids are stripped when read
    assert submission_header(layout) == layout.value + "\n"


@pytest.mark.parametrize(
    ("layout", "fields", "kind", "match"),
    [
        (Layout.IMAGE_CLASS, ["a.jpg_1", "1 1", "x"], "field_count", "expected 2 fields"),
        (Layout.LONG, ["a.jpg", "1"], "field_count", "expected 3 fields"),
        (Layout.IMAGE_CLASS, ["a.jpg", ""], "malformed_id", "is not '<image id>_<class id>'"),
        (Layout.LONG, [" ", "1", ""], "malformed_id", "empty ImageId"),
        (Layout.IMAGE_CLASS, ["a.jpg_5", ""], "bad_class_id", r"class id '5' of 'a\.jpg' is not one of \[1, 2, 3, 4\]"),
        (Layout.LONG, ["a.jpg", "01", ""], "bad_class_id", "class id '01'"),
    ],
)
def test_parse_row_names_the_problem(layout: Layout, fields: list[str], kind: str, match: str) -> None:
    with pytest.raises(RowError, match=match) as info:
        parse_row(fields, layout)
    assert info.value.kind == kind and kind in ROW_ERROR_KINDS


def test_split_image_class() -> None:
    assert split_image_class("0002cc93b.jpg_1") == ("0002cc93b.jpg", 1)
    assert split_image_class("a_b.jpg_4") == ("a_b.jpg", 4)
    for bad in ("0002cc93b.jpg", "_1", "x.jpg_7", "x.jpg_"):
        with pytest.raises(ValueError, match="not"):
            split_image_class(bad)


def test_annotations_dataclass_contract() -> None:
    ann = Annotations(("a", "b"), {"a": ("1 1", "", "", "")}, Layout.LONG)
    assert ann.rles["b"] == ("", "", "", "")  # listed without rows = clean
    with pytest.raises(TypeError):
        ann.rles["c"] = ("", "", "", "")  # type: ignore[index]
    with pytest.raises(AttributeError):
        ann.image_ids = ()  # type: ignore[misc]
    assert ann.subset(["b"]).image_ids == ("b",)
    with pytest.raises(KeyError, match="not annotated"):
        ann.subset(["zzz"])
    with pytest.raises(KeyError, match="unknown image id 'zzz'"):
        ann.masks("zzz")
    with pytest.raises(ValueError, match="duplicate image ids"):
        Annotations(("a", "a"), {})
    with pytest.raises(ValueError, match="missing from image_ids"):
        Annotations(("a",), {"b": ("", "", "", "")})
    with pytest.raises(ValueError, match="expected 4 RLE strings"):
        Annotations(("a",), {"a": ("", "")})  # type: ignore[dict-item]


ROWS = [("x.jpg", ("1 1", "", "3 2", "")), ("y.jpg", ("", "", "", ""))]


def test_write_submission_image_class_layout(tmp_path: Path) -> None:
    path = tmp_path / "sub.csv"
    assert write_submission(path, ROWS) == 2
    lines = path.read_text().splitlines()
    assert lines[0] == "ImageId_ClassId,EncodedPixels"
    assert lines[1:5] == ["x.jpg_1,1 1", "x.jpg_2,", "x.jpg_3,3 2", "x.jpg_4,"]
    assert len(lines) == 1 + 2 * 4
    assert read_annotations(path).rles == dict(ROWS)


def test_write_submission_long_layout_is_positive_rows_only(tmp_path: Path) -> None:
    path = tmp_path / "sub.csv"
    write_submission(path, ROWS, Layout.LONG)
    assert path.read_text().splitlines() == ["ImageId,ClassId,EncodedPixels", "x.jpg,1,1 1", "x.jpg,3,3 2"]
    assert read_annotations(path, ["x.jpg", "y.jpg"]).rles == dict(ROWS)


def test_submission_writer_appends_without_a_second_header(tmp_path: Path) -> None:
    path = tmp_path / "sub.csv"
    with SubmissionWriter(path) as writer:
        writer.write(*ROWS[0])
        assert path.read_text().count("\n") == 5  # flushed after the image
    with SubmissionWriter(path, append=True) as writer:
        assert writer.image_ids == ["x.jpg"]
        writer.write(*ROWS[1])
        with pytest.raises(ValueError, match=r"'x\.jpg' was already written"):
            writer.write(*ROWS[0])
    text = path.read_text()
    assert text.count("ImageId_ClassId") == 1
    assert read_annotations(path).image_ids == ("x.jpg", "y.jpg")
    with SubmissionWriter(path) as writer:  # append=False starts over
        pass
    assert path.read_text() == "ImageId_ClassId,EncodedPixels\n"


def test_submission_writer_cuts_a_partial_last_line(tmp_path: Path) -> None:
    path = tmp_path / "sub.csv"
    path.write_text("ImageId_ClassId,EncodedPixels\nx.jpg_1,1 1\nx.jpg_2,\nx.jpg_3,3 2\nx.jpg_4,\ny.jpg_1,12 ")
    with SubmissionWriter(path, append=True) as writer:
        assert writer.image_ids == ["x.jpg"]
        writer.write("y.jpg", ("", "5 1", "", ""))
    assert read_annotations(path).rles["y.jpg"] == ("", "5 1", "", "")


def test_submission_writer_rejects_bad_use(tmp_path: Path) -> None:
    path = tmp_path / "sub.csv"
    write_submission(path, ROWS, Layout.LONG)
    with pytest.raises(AnnotationFormatError, match="cannot append IMAGE_CLASS rows to a LONG file"):
        SubmissionWriter(path, append=True).__enter__()
    writer = SubmissionWriter(tmp_path / "other.csv")
    with pytest.raises(RuntimeError, match="not open"):
        writer.write("x.jpg", ("", "", "", ""))
    with SubmissionWriter(tmp_path / "other.csv") as writer:
        with pytest.raises(ValueError, match="expected 4 RLE strings"):
            writer.write("x.jpg", ("", ""))
        with pytest.raises(ValueError, match="expected 4 RLE strings"):
            writer.write("x.jpg", "1 1")
        with pytest.raises(ValueError, match="non-empty string"):
            writer.write("", ("", "", "", ""))


def test_synthetic_set_reads_with_its_clean_images(synth_dataset: SynthDataset) -> None:
    ann = read_annotations(synth_dataset.annotations_path, images_dir=synth_dataset.images_dir)
    assert set(ann.image_ids) == set(synth_dataset.image_ids)
    with synth_dataset.annotations_path.open(newline="") as f:
        n_rows = sum(1 for _ in csv.DictReader(f))
    assert int(ann.labels().sum()) == n_rows


def test_real_annotations(real_dir: Path) -> None:
    ann = read_annotations(real_dir / "annotations-1000.csv", shape=(256, 1600))
    assert ann.layout is Layout.LONG
    assert len(ann) == 1000
    assert int(ann.labels().sum()) == 1429
    with (real_dir / "train-index.csv").open(newline="") as f:
        index = {row["ImageId"]: row for row in csv.DictReader(f)}
    expected = np.array([[int(index[i][f"area_{c}"]) > 0 for c in (1, 2, 3, 4)] for i in ann.image_ids])
    np.testing.assert_array_equal(ann.labels(), expected)
    assert (ann.labels().sum(axis=1) >= 2).sum() == 427  # every multi-label image of the slice
