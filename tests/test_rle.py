"""Tests for cascade.rle: table-driven cases, malformed strings, a round-trip property and the real strings."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cascade import rle
from cascade.constants import IMAGE_SHAPE

SMALL = (4, 3)  # H=4, W=3: pixel numbers are 1-4 down column 0, 5-8 down column 1, 9-12 down column 2


def _small(pixels: list[int]) -> np.ndarray:
    """A (4, 3) mask with the given 1-based column-major pixel numbers set."""
    flat = np.zeros(12, dtype=bool)
    flat[np.asarray(pixels, dtype=int) - 1] = True
    return flat.reshape(3, 4).T


def _kaggle_mask2rle(mask: np.ndarray) -> str:
    """The widely copied Kaggle kernel encoder, as an independent reference."""
    pixels = np.concatenate([[0], mask.T.flatten(), [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


CASES = [
    ("empty", [], ""),
    ("full", list(range(1, 13)), "1 12"),
    ("first pixel", [1], "1 1"),
    ("last pixel", [12], "12 1"),
    ("one column", [5, 6, 7, 8], "5 4"),
    ("run across a column boundary", [4, 5], "4 2"),
    ("multi-run", [1, 3, 4, 5, 10, 11, 12], "1 1 3 3 10 3"),
]


@pytest.mark.parametrize(("pixels", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_encode_decode_table(pixels: list[int], text: str) -> None:
    mask = _small(pixels)
    assert rle.encode(mask) == text
    np.testing.assert_array_equal(rle.decode(text, SMALL), mask)
    assert rle.rle_area(text) == len(pixels)


@pytest.mark.parametrize(
    ("text", "pixels"),
    [("1 1", [0]), ("409600 1", [409599]), ("256 2", [255, 256]), ("1 409600", slice(None))],
    ids=["first", "last", "across column", "full"],
)
def test_severstal_shape(text: str, pixels: list[int] | slice) -> None:
    mask = rle.decode(text)
    assert mask.shape == IMAGE_SHAPE
    expected = np.zeros(IMAGE_SHAPE[0] * IMAGE_SHAPE[1], dtype=bool)
    expected[pixels] = True
    np.testing.assert_array_equal(mask.T.reshape(-1), expected)
    assert rle.encode(mask) == text


def test_decode_whitespace_and_touching_runs() -> None:
    assert not rle.decode("   ", SMALL).any()
    assert not rle.decode("", SMALL).any()
    np.testing.assert_array_equal(rle.decode(" 1 1\t3 2\n", SMALL), _small([1, 3, 4]))
    touching = rle.decode("1 2 3 2", SMALL)  # accepted (Kaggle accepts it); re-encoding canonicalizes
    np.testing.assert_array_equal(touching, _small([1, 2, 3, 4]))
    assert rle.encode(touching) == "1 4"


def test_encode_accepts_integer_masks_and_any_layout() -> None:
    mask = _small([2, 3, 9])
    assert rle.encode(mask.astype(np.uint8) * 255) == "2 2 9 1"
    assert rle.encode(np.asfortranarray(mask)) == "2 2 9 1"
    assert rle.encode(np.ascontiguousarray(mask)) == "2 2 9 1"


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((2, 2, 2), dtype=bool), "2-d"),
        (np.zeros((2, 2), dtype=np.float32), "dtype must be bool"),
    ],
)
def test_encode_rejects_bad_masks(bad: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        rle.encode(bad)


BAD = [
    ("odd count", "1 2 3", "odd_count", 0, r"odd number of tokens \(3\)"),
    ("letters", "1 x", "non_integer", 2, r"token 2 \('x' at char 2\) is not a decimal integer"),
    ("float", "1.5 2", "non_integer", 1, r"token 1 \('1.5' at char 0\)"),
    ("plus sign", "+1 2", "non_integer", 1, r"token 1 \('\+1'"),
    ("unicode space", "1\u00a02", "non_integer", 1, "not a decimal integer"),
    ("too many digits", "1 " + "9" * 19, "non_integer", 2, "more than 18 digits"),
    ("start zero", "0 2", "start_below_1", 1, r"token 1 \('0' at char 0\) is a start < 1"),
    ("start negative", "3 1 -1 2", "start_below_1", 3, r"token 3 \('-1' at char 4\) is a start < 1"),
    ("length zero", "1 0", "length_below_1", 2, r"token 2 \('0' at char 2\) is a length < 1"),
    ("unsorted", "5 2 1 2", "unsorted", 3, r"token 3 \('1' at char 4\).*unsorted"),
    ("overlap", "1 3 2 2", "overlap", 3, r"token 3 \('2' at char 4\).*overlapping"),
    ("past the end", "10 4", "out_of_range", 2, r"run 10\.\.13 goes past the last pixel 12"),
    ("start past the end", "13 1", "out_of_range", 2, "past the last pixel 12"),
]


@pytest.mark.parametrize(("text", "kind", "token", "match"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_decode_rejects(text: str, kind: str, token: int, match: str) -> None:
    with pytest.raises(rle.RLEError, match=match) as info:
        rle.decode(text, SMALL)
    assert isinstance(info.value, ValueError)
    assert info.value.kind == kind
    assert info.value.token == token
    assert kind in rle.RLE_ERROR_KINDS


def test_rle_area_validates_and_checks_shape_only_when_given() -> None:
    assert rle.rle_area("") == 0
    assert rle.rle_area("10 4 20 6") == 10
    assert rle.rle_area("10 4") == 4  # no shape: bounds unknown
    with pytest.raises(rle.RLEError, match="past the last pixel 12"):
        rle.rle_area("10 4", shape=SMALL)
    with pytest.raises(rle.RLEError, match="overlapping"):
        rle.rle_area("1 5 3 1")
    with pytest.raises(TypeError, match="must be a str"):
        rle.rle_area(None)  # type: ignore[arg-type]


def test_stack_round_trip_and_error_names_the_class() -> None:
    masks = np.stack([_small([1]), _small([]), _small([2, 3, 4, 5]), _small(list(range(1, 13)))])
    rles = rle.encode_stack(masks)
    assert rles == ["1 1", "", "2 4", "1 12"]
    decoded = rle.decode_stack(rles, SMALL)
    assert decoded.shape == (4, 4, 3)
    assert decoded.dtype == bool
    np.testing.assert_array_equal(decoded, masks)
    with pytest.raises(rle.RLEError, match=r"mask 2 \(class id 3\)") as info:
        rle.decode_stack(["", "", "1 0", ""], SMALL)
    assert info.value.kind == "length_below_1"
    with pytest.raises(TypeError, match="single str"):
        rle.decode_stack("1 1", SMALL)


def test_bad_shape_rejected() -> None:
    with pytest.raises(ValueError, match="shape must be"):
        rle.decode("1 1", (0, 3))
    with pytest.raises(ValueError, match="shape must be"):
        rle.decode("1 1", (4, 3, 1))  # type: ignore[arg-type]


def test_numbers_wider_than_32_bits_and_every_digit_count() -> None:
    """Starts of every width 1..10 digits, including ones that need 64-bit arithmetic."""
    height, width = 1, 2**32 + 16
    starts = np.array([10**k for k in range(10)] + [2**32 + 5], dtype=np.int64)
    text = " ".join(f"{s} 1" for s in starts)
    parsed, _ = rle.decode_runs(text, n_pixels=height * width)
    np.testing.assert_array_equal(parsed, starts)
    assert rle._format_runs(starts, starts) == " ".join(f"{s} {s}" for s in starts)


def test_checkerboard_matches_reference() -> None:
    board = (np.indices((256, 200)).sum(axis=0) % 2).astype(bool)  # > _SORT_EDGES boundaries
    assert board.size // 2 > rle._SORT_EDGES
    text = rle.encode(board)
    assert text == _kaggle_mask2rle(board)
    np.testing.assert_array_equal(rle.decode(text, board.shape), board)


@settings(max_examples=300, deadline=None)
@given(
    arrays(
        dtype=bool,
        shape=st.tuples(st.integers(1, 12), st.integers(1, 12)),
        elements=st.booleans(),
    )
)
def test_round_trip_property(mask: np.ndarray) -> None:
    text = rle.encode(mask)
    assert text == _kaggle_mask2rle(mask)
    np.testing.assert_array_equal(rle.decode(text, mask.shape), mask)
    assert rle.rle_area(text, shape=mask.shape) == int(mask.sum())


def test_real_severstal_strings(real_dir: Path) -> None:
    """All 1,429 real RLEs decode; areas match train-index.csv; re-encoding reproduces each string."""
    with (real_dir / "train-index.csv").open(newline="") as f:
        areas = {row["ImageId"]: row for row in csv.DictReader(f)}
    with (real_dir / "annotations-1000.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1429
    for row in rows:
        text = row["EncodedPixels"]
        mask = rle.decode(text)
        expected = int(areas[row["ImageId"]][f"area_{row['ClassId']}"])
        assert int(mask.sum()) == expected == rle.rle_area(text, shape=IMAGE_SHAPE), row["ImageId"]
        assert rle.encode(mask) == text, row["ImageId"]
