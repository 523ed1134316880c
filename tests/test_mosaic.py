"""Tests for cascade.datasource.mosaic (``cascade mosaic``): tiles of a tiny VOC set laid into 32x160 mosaics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from PIL import Image
from typer.testing import CliRunner

from cascade.classes import SEVERSTAL, ClassSet
from cascade.datasource import (
    DataSourceError,
    LabelledSet,
    MosaicOptions,
    MosaicSet,
    open_labelled,
    parse_size,
    write_mosaics,
)
from cascade.formats import read_annotations
from cascade.rle import encode

NEU_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "neu-seg"
TILE = 20  # source images are TILE x TILE
SIZE = (32, 160)  # 20x20 tiles scaled to 32 high: 5 tiles span 160
FADE = 4
STRIPE = slice(8, 12)  # the "line" class: a bright stripe, 4 px wide, across the whole tile
DENT = (slice(5, 15), slice(5, 15))  # the "dent" class: a dark square
SOURCE_CLASSES = "dent,line"  # ids 1, 2
KINDS = ("vline",) * 4 + ("hline",) * 2 + ("dent",) * 4 + ("clean",) * 2


def _level(index: int) -> int:
    """Each source image's own grey level, so a tile can be told by its pixels."""
    return 40 + 12 * index


@pytest.fixture(scope="module")
def voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 images 20x20 (PNG, half grayscale, half RGB) with index masks: 4 vertical and 2 horizontal
    ``line`` stripes, 4 ``dent`` squares, 2 clean; split ``train`` = the first 10, ``val`` = the last 2."""
    root = tmp_path_factory.mktemp("voc")
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    ids = []
    for index, kind in enumerate(KINDS):
        image = np.full((TILE, TILE), _level(index), dtype=np.uint8)
        mask = np.zeros((TILE, TILE), dtype=np.uint8)
        if kind == "vline":
            image[:, STRIPE], mask[:, STRIPE] = 250, 2
        elif kind == "hline":
            image[STRIPE, :], mask[STRIPE, :] = 250, 2
        elif kind == "dent":
            image[DENT], mask[DENT] = 5, 1
        stem = f"img{index:02d}"
        pixels = Image.fromarray(image)
        (pixels if index % 2 else pixels.convert("RGB")).save(root / "JPEGImages" / f"{stem}.png")
        Image.fromarray(mask).save(root / "SegmentationClass" / f"{stem}.png")
        ids.append(stem)
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids[:10]) + "\n")
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids[10:]) + "\n")
    return root


@pytest.fixture(scope="module")
def source(voc: Path) -> LabelledSet:
    return open_labelled(voc, classes=SOURCE_CLASSES)


def _options(**overrides: object) -> MosaicOptions:
    settings: dict = {"class_map": ("line=scratches",), "n": 8, "size": SIZE, "fade": FADE, "seed": 3}
    return MosaicOptions(**{**settings, **overrides})


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _masks(written: MosaicSet) -> dict[str, np.ndarray]:
    """Each new mosaic's decoded masks, read back from the CSV."""
    data = open_labelled(written.root)
    return {i: data.annotations.masks(i) for i in written.image_ids}


def test_same_seed_gives_identical_files_and_another_seed_others(source: LabelledSet, tmp_path: Path) -> None:
    first = write_mosaics(source, tmp_path / "a", _options())
    write_mosaics(source, tmp_path / "b", _options())
    other = write_mosaics(source, tmp_path / "c", _options(seed=4))
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert len(_files(tmp_path / "a")) == 8 + 1  # the mosaics and train.csv (Severstal's classes: no class file)
    assert [t.source_id for m in first.placements for t in m] != [t.source_id for m in other.placements for t in m]
    assert first.image_ids[0] == "mosaic-3-00000.jpg" and other.image_ids[0] == "mosaic-4-00000.jpg"


def test_mapped_pixels_land_in_their_tiles_columns(source: LabelledSet, tmp_path: Path) -> None:
    written = write_mosaics(source, tmp_path / "out", _options(n=12))
    masks = _masks(written)
    assert written.tiles_per_image == 5 and written.positives == 6
    ids = source.image_ids
    for image_id, tiles in zip(written.image_ids, written.placements, strict=True):
        mask = masks[image_id]
        assert mask.shape == (4, *SIZE) and not mask[[0, 1, 3]].any()  # only class 3 (scratches) is mapped
        image = np.asarray(Image.open(written.images_dir / image_id).convert("L"), dtype=float)
        expected = np.zeros(SIZE[1], dtype=bool)
        for tile in tiles:
            (x0, x1), (c0, c1) = tile.span, tile.columns
            index = ids.index(tile.source_id)
            assert tile.positive == (KINDS[index] in ("vline", "hline"))
            if tile.positive:  # source columns 8..11 (rows 8..11 turned upright), nearest neighbour
                source_col = ((np.arange(c0, c1) - x0 + 0.5) * TILE / (x1 - x0)).astype(int)
                expected[c0:c1] = (source_col >= STRIPE.start) & (source_col < STRIPE.stop)
            core = image[:, c0 + FADE : c1 - FADE]  # the tile's own pixels: its grey level, away from the fades
            assert abs(np.median(core) - _level(index)) <= 3, (tile, np.median(core))
        assert (mask[2] == expected[None, :]).all(), image_id  # whole columns, exactly the stripe's
        assert mask[2].any() == any(t.positive for t in tiles)


def test_unmapped_classes_are_background(source: LabelledSet, tmp_path: Path) -> None:
    only_line = write_mosaics(source, tmp_path / "line", _options(n=10))
    assert only_line.tiles_per_class["dent"] > 0  # dent tiles were used, as background
    rows = read_annotations(only_line.annotations_path)
    assert rows.class_counts() == (0, 0, only_line.positives, 0)
    both = write_mosaics(source, tmp_path / "both", _options(n=10, class_map=("line=scratches", "dent=pits")))
    assert read_annotations(both.annotations_path).class_counts()[0] > 0  # mapped, the same tiles give class 1


@pytest.mark.parametrize(("orient", "turned_kind"), [("vertical", "hline"), ("horizontal", "vline"), ("none", None)])
def test_orient_turns_tiles_holding_mapped_classes(
    source: LabelledSet, tmp_path: Path, orient: str, turned_kind: str | None
) -> None:
    written = write_mosaics(source, tmp_path / "out", _options(n=16, orient=orient, positive_share=1.0))
    masks = _masks(written)
    kinds_seen = set()
    for image_id, tiles in zip(written.image_ids, written.placements, strict=True):
        for tile in (t for t in tiles if t.positive):
            kind = KINDS[source.image_ids.index(tile.source_id)]
            kinds_seen.add(kind)
            assert tile.rotated == (kind == turned_kind), (orient, tile)
            c0, c1 = tile.columns
            region = masks[image_id][2][:, c0:c1]
            upright = (kind == "vline") != tile.rotated
            assert region.all(axis=0).any() == upright  # a stripe top to bottom in some columns
            assert region.all(axis=1).any() == (not upright)  # or across the tile in some rows
    assert kinds_seen == {"vline", "hline"}


def _kaggle_set(root: Path, *, newline: bool) -> bytes:
    """A tiny existing Kaggle-CSV set of 32x160 images: one with a row, one clean."""
    (root / "train_images").mkdir(parents=True)
    for name in ("old1.jpg", "old2.jpg"):
        Image.new("RGB", SIZE[::-1], (90, 90, 90)).save(root / "train_images" / name)
    mask = np.zeros(SIZE, dtype=bool)
    mask[3:9, 20:40] = True
    text = f"ImageId,ClassId,EncodedPixels\nold1.jpg,1,{encode(mask)}" + ("\n" if newline else "")
    (root / "train.csv").write_text(text)
    return text.encode()


@pytest.mark.parametrize("newline", [True, False], ids=["csv-ends-in-newline", "csv-without-last-newline"])
def test_append_keeps_the_set_and_refuses_clashes(source: LabelledSet, tmp_path: Path, newline: bool) -> None:
    out = tmp_path / "set"
    before = _kaggle_set(out, newline=newline)
    with pytest.raises(DataSourceError, match=r"not empty.*--append"):
        write_mosaics(source, out, _options())
    written = write_mosaics(source, out, MosaicOptions(class_map=("2=3",), n=4, fade=FADE), append=True)
    assert written.size == SIZE  # the existing images' size, not Severstal's
    after = (out / "train.csv").read_bytes()
    assert after.startswith(before.rstrip(b"\n") + b"\n")
    data = open_labelled(out)
    assert data.image_ids == (*(f"mosaic-0-{i:05d}.jpg" for i in range(4)), "old1.jpg", "old2.jpg")
    assert data.annotations.rles["old1.jpg"][0] and data.annotations.class_counts() == (1, 0, 2, 0)

    files = _files(out)
    with pytest.raises(DataSourceError, match=r"already holds 4 of these names, e.g. mosaic-0-00000.jpg"):
        write_mosaics(source, out, MosaicOptions(class_map=("2=3",), n=4, fade=FADE), append=True)
    assert _files(out) == files


def test_a_failed_run_leaves_the_set_as_it_was(
    source: LabelledSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "set"
    _kaggle_set(out, newline=True)
    files = _files(out)
    calls = []

    def failing_encode(image: np.ndarray, quality: int) -> bytes:
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return b"jpeg"

    monkeypatch.setattr("cascade.datasource.mosaic.encode_jpeg", failing_encode)
    with pytest.raises(OSError, match="disk full"):
        write_mosaics(source, out, _options(), append=True)
    assert _files(out) == files  # the two images written before the failure are gone, the CSV untouched
    with pytest.raises(OSError, match="disk full"):
        calls.clear()
        write_mosaics(source, tmp_path / "new", _options())
    assert not (tmp_path / "new").exists()


def test_other_target_classes_are_written_and_read_back(source: LabelledSet, tmp_path: Path) -> None:
    target = ClassSet((1, 2), ("scratch", "spot"))
    written = write_mosaics(source, tmp_path / "out", _options(class_map=("line=scratch", "dent=spot")), target=target)
    data = open_labelled(tmp_path / "out")
    assert data.kind == "kaggle-csv" and data.classes.names == ("scratch", "spot")
    assert set(data.annotations.shapes.values()) == {SIZE}
    assert data.annotations.labels().any(axis=1).sum() == written.positives  # a line or a dent tile: positive
    assert min(data.annotations.class_counts()) > 0
    with pytest.raises(DataSourceError, match=r"holds classes 1=scratch, 2=spot.*not the 1=pits"):
        write_mosaics(source, tmp_path / "out", _options(seed=9), target=SEVERSTAL, append=True)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"class_map": ("nope=scratches",)}, r"source class 'nope' is neither a name nor an id .*1=dent, 2=line"),
        ({"class_map": ("line=9",)}, r"target class '9' is neither .*3=scratches"),
        ({"class_map": ("line",)}, r"'line' is not SOURCE=TARGET"),
        ({"class_map": ("2=3", "line=1")}, r"source class 'line' is mapped twice"),
        ({"class_map": ()}, r"at least one class map"),
        ({"fade": 32}, r"5 tiles across 160 px are 32 px wide, not wider than the 32 px fade"),
        ({"tiles_per_image": 40}, r"40 tiles across 160 px are 4 px wide"),
        ({"positive_share": 1.5}, r"positive_share must be within 0..1"),
        ({"orient": "diagonal"}, r"orient 'diagonal' is not one of vertical, horizontal, none"),
        ({"n": 0}, r"n must be >= 1"),
    ],
)
def test_bad_options_are_named(source: LabelledSet, tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(DataSourceError, match=message):
        write_mosaics(source, tmp_path / "out", _options(**overrides))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", ["256", "0x1600", "256x", "axb", "256x1600x3"])
def test_bad_size_is_named(text: str) -> None:
    with pytest.raises(DataSourceError, match=rf"size '{text}' is not HEIGHTxWIDTH"):
        parse_size(text)
    assert parse_size("256x1600") == (256, 1600) and parse_size(" 32X160 ") == (32, 160)


def test_sources_without_the_tiles_asked_for_are_refused(voc: Path, tmp_path: Path) -> None:
    clean = open_labelled(voc, classes=SOURCE_CLASSES, split="val")  # two clean images
    with pytest.raises(DataSourceError, match=r"no image holds a mapped class \(line\)"):
        write_mosaics(clean, tmp_path / "a", _options())
    assert write_mosaics(clean, tmp_path / "b", _options(positive_share=0.0)).positives == 0
    empty = tmp_path / "empty"
    for d in ("JPEGImages", "SegmentationClass"):
        (empty / d).mkdir(parents=True)
    with pytest.raises(DataSourceError, match="empty data set"):
        open_labelled(empty)


def _cli(*args: str) -> Result:
    from cascade.cli.main import app

    return CliRunner().invoke(app, ["mosaic", *args])


def test_cli_writes_a_set_that_reads_back(voc: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    common = ["--source-classes", SOURCE_CLASSES, "--size", "32x160", "--fade", "4", "--out", str(out)]
    result = _cli(str(voc), *common, "--split", "train", "--map", "line=scratches", "--n", "6")
    assert result.exit_code == 0, result.output
    assert "wrote 6 mosaics (32x160, 5 tiles each)" in result.output
    assert "3 positive (line -> scratches (3)); tiles used per source class: dent " in result.output
    data = open_labelled(out)
    assert len(data) == 6 and data.annotations.class_counts() == (0, 0, 3, 0)
    assert not set(data.image_ids) & {"img10.png", "img11.png"}

    again = _cli(str(voc), *common, "--map", "line=scratches")
    assert again.exit_code == 2 and "is not empty" in again.output
    bad = _cli(str(voc), *common, "--map", "line=rust", "--append")
    assert bad.exit_code == 2 and "error: target class 'rust' is neither" in bad.output
    assert len(open_labelled(out)) == 6


@pytest.mark.skipif(not (NEU_DIR / "JPEGImages").is_dir(), reason=f"NEU-Seg not found at {NEU_DIR}")
def test_neu_seg_mosaics(tmp_path: Path) -> None:
    source = open_labelled(NEU_DIR, classes="inclusion,patches,scratches", split="train")
    written = write_mosaics(source, tmp_path / "neu", MosaicOptions(class_map=("scratches=scratches",), n=4))
    data = open_labelled(tmp_path / "neu")
    assert set(data.annotations.shapes.values()) == {(256, 1600)} and written.tiles_per_image == 7
    assert data.annotations.class_counts() == (0, 0, 2, 0) and written.positives == 2
    used = {t.source_id for tiles in written.placements for t in tiles}
    assert used <= set(source.image_ids)
