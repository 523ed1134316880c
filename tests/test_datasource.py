"""Tests for cascade.datasource: detecting and opening VOC folders, mask folders and Kaggle CSVs."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cascade.classes import SEVERSTAL, ClassSet
from cascade.datasource import (
    DATA_KINDS,
    DataSourceError,
    LabelledSet,
    detect_kind,
    open_labelled,
    read_mask_png,
    write_mask_folder,
)
from cascade.rle import encode

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
NEU_DIR = SHARED / "neu-seg"
SEVERSTAL_DIR = SHARED / "severstal-real"
SHAPES = {"a": (20, 30), "b": (30, 20), "c": (24, 36)}  # (H, W): non-square, one size per image


def _image(path: Path, shape: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(path.name))
    Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(path)


def _png(path: Path, value: np.ndarray, mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.frombytes(mode, (value.shape[1], value.shape[0]), np.ascontiguousarray(value, np.uint8).tobytes())
    if mode == "P":
        img.putpalette([(v * 37) % 256 for v in range(768)])  # colours unrelated to the indices
    img.save(path)


def _mask(shape: tuple[int, int], values: list[int]) -> np.ndarray:
    """``(H, W)`` uint8: horizontal bands of ``values``, the rest background."""
    out = np.zeros(shape, dtype=np.uint8)
    for k, v in enumerate(values):
        out[2 + 3 * k : 4 + 3 * k, 1 : shape[1] - 1] = v
    return out


def _voc(root: Path, masks: dict[str, np.ndarray], mode: str = "L") -> Path:
    for stem, value in masks.items():
        _image(root / "JPEGImages" / f"{stem}.jpg", value.shape)
        _png(root / "SegmentationClass" / f"{stem}.png", value, mode)
    return root


def _mask_folder(root: Path, masks: dict[str, np.ndarray]) -> Path:
    for stem, value in masks.items():
        _image(root / "images" / f"{stem}.jpg", value.shape)
        _png(root / "masks" / f"{stem}.png", value)
    return root


def _kaggle(root: Path) -> Path:
    for stem, shape in SHAPES.items():
        _image(root / "train_images" / f"{stem}.jpg", shape)
    (root / "train.csv").write_text("ImageId,ClassId,EncodedPixels\na.jpg,1,1 5\nb.jpg,3,10 4\nb.jpg,4,30 2\n")
    return root


def _expected_index(value: np.ndarray, ids: tuple[int, ...]) -> np.ndarray:
    return value[None] == np.array(ids)[:, None, None]


def test_voc_round_trip_index_masks_with_void(tmp_path: Path) -> None:
    masks = {stem: _mask(shape, [1, 3, 2][: k + 1]) for k, (stem, shape) in enumerate(SHAPES.items())}
    masks["c"][0, :] = 255  # VOC void border: background
    labelled = open_labelled(_voc(tmp_path, masks))
    assert isinstance(labelled, LabelledSet)
    assert (labelled.kind, labelled.mask_encoding, labelled.splits) == ("voc", "index", {})
    assert labelled.images_dir == tmp_path / "JPEGImages"
    assert labelled.image_ids == ("a.jpg", "b.jpg", "c.jpg")
    assert labelled.classes == ClassSet.with_ids((1, 2, 3))
    assert labelled.annotations.class_ids == (1, 2, 3)
    for stem, value in masks.items():
        image_id = f"{stem}.jpg"
        assert labelled.annotations.shapes[image_id] == SHAPES[stem]
        np.testing.assert_array_equal(labelled.annotations.masks(image_id), _expected_index(value, (1, 2, 3)))
    assert labelled.annotations.labels().tolist() == [[True, False, False], [True, False, True], [True, True, True]]


def test_voc_splits(tmp_path: Path) -> None:
    root = _voc(tmp_path, {stem: _mask(shape, [1]) for stem, shape in SHAPES.items()})
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("a\nc\n\n")
    (sets / "val.txt").write_text("b.jpg\n")  # a file name works as well as an id
    labelled = open_labelled(root)
    assert dict(labelled.splits) == {"train": ("a.jpg", "c.jpg"), "val": ("b.jpg",)}
    train = labelled.split("train")
    assert train.image_ids == ("a.jpg", "c.jpg") and dict(train.splits) == {"train": ("a.jpg", "c.jpg")}
    assert open_labelled(root, split="val").image_ids == ("b.jpg",)
    with pytest.raises(DataSourceError, match=r"no split 'test'; available splits: train, val"):
        labelled.split("test")


def test_voc_labelmap_names_classes_and_palette_indices_are_used(tmp_path: Path) -> None:
    root = _voc(tmp_path, {"a": _mask((20, 30), [1, 2]), "b": _mask((30, 20), [2])}, mode="P")
    (root / "labelmap.txt").write_text(
        "# label:color_rgb:parts:actions\nbackground:0,0,0::\ninclusion:128,0,0::\npatches:0,128,0::\n"
    )
    labelled = open_labelled(root)
    assert labelled.classes == ClassSet((1, 2), ("inclusion", "patches"), ((128, 0, 0), (0, 128, 0)))
    assert labelled.annotations.labels().tolist() == [[True, True], [False, True]]


def test_labelmap_without_background_first(tmp_path: Path) -> None:
    root = _voc(tmp_path, {"a": _mask((20, 30), [1])})
    (root / "labelmap.txt").write_text("inclusion:128,0,0::\n")
    with pytest.raises(DataSourceError, match=r"labelmap\.txt: the first label must be 'background'"):
        open_labelled(root)
    (root / "labelmap.txt").write_text("background:0,0,0::\ninclusion:128,0::\n")
    with pytest.raises(DataSourceError, match=r"labelmap\.txt:2: expected 'name:r,g,b::'"):
        open_labelled(root)


def test_class_file_next_to_data_wins_over_labelmap_and_carries_the_encoding(tmp_path: Path) -> None:
    root = _voc(tmp_path, {"a": _mask((20, 30), [1, 2, 3])})  # 3 = classes 1 and 2 as bit flags
    (root / "labelmap.txt").write_text("background:0,0,0::\nx:1,2,3::\n")
    (root / "classes.yaml").write_text("classes: [pits, marks]\nmask_encoding: bits\n")
    labelled = open_labelled(root)
    assert (labelled.classes.names, labelled.mask_encoding) == (("pits", "marks"), "bits")
    masks = labelled.annotations.masks("a.jpg")
    value = _mask((20, 30), [1, 2, 3])
    np.testing.assert_array_equal(masks, np.stack([value & 1 > 0, value & 2 > 0]))
    # given classes replace the file's, but its encoding still describes the masks (auto alone would say index)
    assert open_labelled(root, classes="a,b,c").mask_encoding == "bits"
    (root / "classes.yaml").write_text("classes: [pits, marks]\nmask_encoding: rgb\n")
    with pytest.raises(DataSourceError, match=r"classes\.yaml: mask_encoding 'rgb' is not one of 'index', 'bits'"):
        open_labelled(root)


def test_classes_argument_as_names_file_or_class_set(tmp_path: Path) -> None:
    root = _mask_folder(tmp_path / "data", {"a": _mask((20, 30), [1, 2])})
    assert open_labelled(root, classes="inclusion, patches").classes.names == ("inclusion", "patches")
    class_file = tmp_path / "my.json"
    class_file.write_text('{"classes": {"1": "one", "2": "two", "5": "five"}}')
    assert open_labelled(root, classes=class_file).classes.ids == (1, 2, 5)
    assert open_labelled(root, classes=str(class_file)).classes.ids == (1, 2, 5)
    assert open_labelled(root, classes=SEVERSTAL).classes is SEVERSTAL
    with pytest.raises(DataSourceError, match=r"class file not found: .*missing\.yaml"):
        open_labelled(root, classes=tmp_path / "missing.yaml")


def test_mask_folder_bit_flags_keep_overlapping_classes(tmp_path: Path) -> None:
    value = _mask((20, 30), [1, 4, 8])
    value[1:15, 10:12] |= 2  # class 2 crossing classes 1, 3 and 4: values 3, 6 and 10
    root = _mask_folder(tmp_path, {"a": value, "b": _mask((30, 20), [2, 4])})
    labelled = open_labelled(root, classes=SEVERSTAL)
    assert (labelled.kind, labelled.mask_encoding) == ("mask-folder", "bits")
    expected = np.stack([(value >> b) & 1 > 0 for b in range(4)])
    np.testing.assert_array_equal(labelled.annotations.masks("a.jpg"), expected)
    assert (expected[0] & expected[1]).any() and (expected[1] & expected[3]).any()  # overlaps survived
    np.testing.assert_array_equal(read_mask_png(root / "masks" / "a.png", SEVERSTAL, "bits"), expected)


def test_mask_folder_index_masks(tmp_path: Path) -> None:
    value = _mask((30, 20), [1, 2, 3])
    labelled = open_labelled(_mask_folder(tmp_path, {"a": value}), mask_encoding="index")
    assert labelled.mask_encoding == "index"
    np.testing.assert_array_equal(labelled.annotations.masks("a.jpg"), _expected_index(value, (1, 2, 3)))


@pytest.mark.parametrize(
    ("values", "classes", "expected_encoding", "expected_ids"),
    [
        ([1, 2, 3], None, "index", (1, 2, 3)),  # NEU-Seg
        ([1, 4, 8], None, "bits", (1, 2, 3, 4)),  # real Severstal: ids 1..K, class 2 absent
        ([1, 2, 4, 8, 12], None, "bits", (1, 2, 3, 4)),
        ([1, 3], None, "index", (1, 2, 3)),  # flag 2 never alone: not bit flags
        ([1, 4, 255], None, "index", (1, 2, 3, 4)),  # 255 = void
        ([2], None, "bits", (1, 2)),  # not 1..K; both readings agree
        ([1, 2, 4, 8], SEVERSTAL, "bits", (1, 2, 3, 4)),
        ([1, 2, 3], SEVERSTAL, "index", (1, 2, 3, 4)),  # every value a class id
        ([1, 2, 4], ClassSet.with_ids((1, 2, 3)), "bits", (1, 2, 3)),
    ],
)
def test_auto_encoding_rule(
    tmp_path: Path,
    values: list[int],
    classes: ClassSet | None,
    expected_encoding: str,
    expected_ids: tuple[int, ...],
) -> None:
    root = _mask_folder(tmp_path, {"a": _mask((20, 30), values[:2]), "b": _mask((30, 20), values[2:])})
    labelled = open_labelled(root, classes=classes)
    assert (labelled.mask_encoding, labelled.classes.ids) == (expected_encoding, expected_ids)


def test_ambiguous_values_are_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _mask_folder(tmp_path, {"a": _mask((20, 30), [1, 2, 3])})
    with caplog.at_level(logging.WARNING, logger="cascade.datasource"):
        assert open_labelled(root).mask_encoding == "index"
    assert "also valid bit flags" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cascade.datasource"):
        assert open_labelled(root, mask_encoding="bits").classes.ids == (1, 2)
    assert "also valid" not in caplog.text


def test_error_mask_size_differs_from_image(tmp_path: Path) -> None:
    root = _mask_folder(tmp_path, {"a": _mask((20, 30), [1])})
    _png(root / "masks" / "a.png", _mask((20, 31), [1]))
    with pytest.raises(
        DataSourceError, match=r"a\.png: mask is 31x20 \(width x height\) but its image .*a\.jpg is 30x20"
    ):
        open_labelled(root)


def test_error_unknown_class_values(tmp_path: Path) -> None:
    root = _voc(tmp_path, {"a": _mask((20, 30), [1]), "b": _mask((30, 20), [2, 5])})
    message = (
        r"b\.png: unknown class values \[5\] with index encoding; found \[2, 5\], "
        r"allowed: 0 \(background\), class ids \[1, 2\], 255"
    )
    with pytest.raises(DataSourceError, match=message):
        open_labelled(root, classes="x,y")
    with pytest.raises(DataSourceError, match=r"b\.png: unknown class values \[5\] with bits encoding.*flags \[1, 2\]"):
        open_labelled(root, classes="x,y", mask_encoding="bits")
    with pytest.raises(DataSourceError, match=r"b\.png: unknown class values \[5\] with index encoding"):
        read_mask_png(root / "SegmentationClass" / "b.png", ClassSet.with_ids((1, 2)), "index")


def test_error_or_exclusion_of_images_without_a_mask(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _mask_folder(tmp_path, {"a": _mask((20, 30), [1]), "b": _mask((30, 20), [1])})
    _image(root / "images" / "c.jpg", (24, 36))
    _image(root / "images" / "d.png", (24, 36))
    with pytest.raises(DataSourceError, match=r"c\.jpg: image without a mask: expected .*c\.png \(2 of 4 images"):
        open_labelled(root)
    with caplog.at_level(logging.WARNING, logger="cascade.datasource"):
        labelled = open_labelled(root, require_masks=False)
    assert labelled.image_ids == ("a.jpg", "b.jpg")
    assert "left out 2 of 4 images that have no mask" in caplog.text


def test_error_mask_without_an_image(tmp_path: Path) -> None:
    root = _voc(tmp_path, {"a": _mask((20, 30), [1])})
    _png(root / "SegmentationClass" / "z.png", _mask((20, 30), [1]))
    with pytest.raises(DataSourceError, match=r"z\.png: mask without an image: no z\.\* in .*JPEGImages"):
        open_labelled(root)


def test_error_split_names_a_missing_image(tmp_path: Path) -> None:
    root = _voc(tmp_path, {"a": _mask((20, 30), [1])})
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("a\n\nq17\n")
    with pytest.raises(DataSourceError, match=r"val\.txt:3: 'q17' names no image in .*JPEGImages"):
        open_labelled(root)


def test_error_empty_data_set(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataSourceError, match=r"images: empty data set: no images \(\.jpg"):
        open_labelled(tmp_path)
    _image(tmp_path / "images" / "a.jpg", (20, 30))
    with pytest.raises(DataSourceError, match=r"masks: empty data set: none of the 1 images has a mask"):
        open_labelled(tmp_path, require_masks=False)


def test_error_unreadable_image_and_mask(tmp_path: Path) -> None:
    root = _mask_folder(tmp_path, {"a": _mask((20, 30), [1])})
    (root / "masks" / "a.png").write_bytes(b"not a png")
    with pytest.raises(DataSourceError, match=r"a\.png: cannot read mask"):
        open_labelled(root)
    _png(root / "masks" / "a.png", _mask((20, 30), [1]))
    (root / "images" / "a.jpg").write_bytes(b"")
    with pytest.raises(DataSourceError, match=r"a\.jpg: cannot read image"):
        open_labelled(root)


def test_error_rgb_mask(tmp_path: Path) -> None:
    root = _mask_folder(tmp_path, {"a": _mask((20, 30), [1])})
    Image.new("RGB", (30, 20)).save(root / "masks" / "a.png")
    with pytest.raises(DataSourceError, match=r"a\.png: mask has mode RGB .*export class-index or bit-flag PNGs"):
        open_labelled(root)


def test_error_jpeg_mask(tmp_path: Path) -> None:
    root = _mask_folder(tmp_path, {"a": _mask((20, 30), [1])})
    _image(root / "masks" / "b.jpg", (20, 30))
    with pytest.raises(DataSourceError, match=r"b\.jpg: masks must be PNG files"):
        open_labelled(root)


def test_error_masks_that_are_all_background_give_no_classes(tmp_path: Path) -> None:
    root = _mask_folder(tmp_path, {"a": _mask((20, 30), [])})
    with pytest.raises(DataSourceError, match=r"masks: every mask is background only.*pass classes"):
        open_labelled(root)
    assert open_labelled(root, classes="x").annotations.labels().tolist() == [[False]]


def test_detect_kind(tmp_path: Path) -> None:
    voc = _voc(tmp_path / "voc", {"a": _mask((20, 30), [1])})
    folder = _mask_folder(tmp_path / "folder", {"a": _mask((20, 30), [1])})
    kaggle = _kaggle(tmp_path / "kaggle")
    assert [detect_kind(voc), detect_kind(folder), detect_kind(kaggle)] == ["voc", "mask-folder", "kaggle-csv"]
    assert detect_kind(kaggle / "train.csv") == "kaggle-csv"
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DataSourceError, match=r"cannot tell .* kaggle-csv needs .* voc needs JPEGImages/ .* mask-folder"
    ):
        detect_kind(tmp_path / "empty")
    with pytest.raises(DataSourceError, match=r"labelled data not found"):
        detect_kind(tmp_path / "nowhere")
    assert set(DATA_KINDS) == {"kaggle-csv", "voc", "mask-folder"}


def test_kaggle_csv(tmp_path: Path) -> None:
    root = _kaggle(tmp_path)
    labelled = open_labelled(root)
    assert (labelled.kind, labelled.mask_encoding, labelled.classes) == ("kaggle-csv", None, SEVERSTAL)
    assert labelled.images_dir == root / "train_images"
    assert labelled.image_ids == ("a.jpg", "b.jpg", "c.jpg")  # c.jpg: clean
    assert dict(labelled.annotations.shapes) == {f"{s}.jpg": shape for s, shape in SHAPES.items()}
    assert labelled.annotations.labels().tolist() == [[1, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]]
    assert open_labelled(root / "train.csv").annotations == labelled.annotations
    (root / "train_images").rename(root / "pictures")
    with pytest.raises(DataSourceError, match=r"train\.csv: no images folder next to it .*pass images="):
        open_labelled(root)
    assert open_labelled(root, images="pictures").image_ids == labelled.image_ids
    with pytest.raises(DataSourceError, match=r"mask_encoding='bits' applies to mask PNGs"):
        open_labelled(root, images="pictures", mask_encoding="bits")


def test_kaggle_csv_rle_past_the_image(tmp_path: Path) -> None:
    root = _kaggle(tmp_path)
    (root / "train.csv").write_text("ImageId,ClassId,EncodedPixels\nb.jpg,2,590 20\n")
    with pytest.raises(DataSourceError, match=r"train\.csv: b\.jpg class 2: RLE does not fit the 20x30 image"):
        open_labelled(root)


def test_write_mask_folder_round_trip(tmp_path: Path) -> None:
    source = _kaggle(tmp_path / "kaggle")
    (source / "train.csv").write_text("ImageId,ClassId,EncodedPixels\na.jpg,1,1 5\na.jpg,2,3 6\nb.jpg,4,30 2\n")
    labelled = open_labelled(source)
    out = write_mask_folder(tmp_path / "bits", labelled.images_dir, labelled.annotations, SEVERSTAL)
    reopened = open_labelled(out)
    assert (reopened.kind, reopened.mask_encoding, reopened.classes) == ("mask-folder", "bits", SEVERSTAL)
    assert reopened.annotations.rles == labelled.annotations.rles
    assert reopened.annotations.shapes == labelled.annotations.shapes
    with pytest.raises(DataSourceError, match=r"a\.jpg: classes \[1, 2\] overlap, which index masks cannot hold"):
        write_mask_folder(tmp_path / "index", labelled.images_dir, labelled.annotations, SEVERSTAL, encoding="index")
    with pytest.raises(DataSourceError, match=r"already exists"):
        write_mask_folder(tmp_path / "bits", labelled.images_dir, labelled.annotations, SEVERSTAL)


def test_write_mask_folder_index_round_trip(tmp_path: Path) -> None:
    value = _mask((24, 36), [1, 2, 3])
    labelled = open_labelled(_voc(tmp_path / "voc", {"c": value}), classes="x,y,z")
    out = write_mask_folder(tmp_path / "out", labelled.images_dir, labelled.annotations, labelled.classes, "index")
    reopened = open_labelled(out)
    assert (reopened.mask_encoding, reopened.classes) == ("index", labelled.classes)
    np.testing.assert_array_equal(reopened.annotations.masks("c.jpg"), _expected_index(value, (1, 2, 3)))
    assert encode(value == 2) == reopened.annotations.rles["c.jpg"][1]


def test_bad_arguments(tmp_path: Path) -> None:
    root = _mask_folder(tmp_path, {"a": _mask((20, 30), [1])})
    with pytest.raises(DataSourceError, match=re.escape("mask_encoding 'rgb' is not one of auto, index, bits")):
        open_labelled(root, mask_encoding="rgb")
    with pytest.raises(DataSourceError, match=r"no split 'train'; available splits: none"):
        open_labelled(root, split="train")
    with pytest.raises(DataSourceError, match=r"images= applies to kaggle-csv"):
        open_labelled(root, images="images")
    with pytest.raises(DataSourceError, match=r"encoding 'auto' is not one of 'index', 'bits'"):
        read_mask_png(root / "masks" / "a.png", SEVERSTAL, "auto")


@pytest.fixture(scope="module")
def neu() -> LabelledSet:
    if not (NEU_DIR / "SegmentationClass").is_dir():
        pytest.skip(f"NEU-Seg not found at {NEU_DIR}")
    return open_labelled(NEU_DIR)


def test_neu_seg(neu: LabelledSet) -> None:
    assert (neu.kind, neu.mask_encoding, len(neu), neu.classes.ids) == ("voc", "index", 4023, (1, 2, 3))
    assert {k: len(v) for k, v in neu.splits.items()} == {"train": 3129, "val": 894}
    assert set(neu.annotations.shapes.values()) == {(200, 200)}
    assert neu.annotations.labels().any(axis=1).all()  # every NEU-Seg image has a defect
    val = neu.split("val")
    assert len(val) == 894 and not set(val.image_ids) & set(neu.splits["train"])
    image_id = val.image_ids[0]
    value = np.asarray(Image.open(NEU_DIR / "SegmentationClass" / f"{Path(image_id).stem}.png"))
    np.testing.assert_array_equal(val.annotations.masks(image_id), _expected_index(value, (1, 2, 3)))


def test_severstal_real_masks() -> None:
    if not (SEVERSTAL_DIR / "masks").is_dir():
        pytest.skip(f"real Severstal masks not found at {SEVERSTAL_DIR / 'masks'}")
    with pytest.raises(DataSourceError, match=r"image without a mask"):
        open_labelled(SEVERSTAL_DIR)
    inferred = open_labelled(SEVERSTAL_DIR, require_masks=False)
    named = open_labelled(SEVERSTAL_DIR, require_masks=False, classes=SEVERSTAL)
    for labelled in (inferred, named):
        assert (labelled.kind, labelled.mask_encoding, len(labelled)) == ("mask-folder", "bits", 37)
        assert labelled.classes.ids == (1, 2, 3, 4)
        assert set(labelled.annotations.shapes.values()) == {(256, 1600)}
    assert inferred.annotations.rles == named.annotations.rles
    rows = (SEVERSTAL_DIR / "images.csv").read_text().splitlines()
    header = rows[0].split(",")
    areas = {
        r[0]: [int(r[header.index(f"area_{k}")]) for k in range(1, 5)] for r in (row.split(",") for row in rows[1:])
    }
    for image_id in named.image_ids:
        assert named.annotations.masks(image_id).sum(axis=(1, 2)).tolist() == areas[image_id]
