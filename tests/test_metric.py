"""Tests for cascade.metric: the Dice table, the Kaggle mean and scoring two annotation sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cascade.formats import Annotations, Layout, read_annotations
from cascade.metric import DiceReport, dice_pairs, kaggle_dice, score_annotations
from cascade.rle import encode_stack

SHAPE = (4, 3)


def _mask(*pixels: tuple[int, int]) -> np.ndarray:
    out = np.zeros(SHAPE, dtype=bool)
    for r, c in pixels:
        out[r, c] = True
    return out


FOUR = ((0, 0), (1, 0), (2, 0), (3, 0))
SIX = ((1, 0), (2, 0), (3, 0), (0, 1), (1, 1), (2, 1))
DICE_TABLE = [
    ("empty vs empty", (), (), 1.0),
    ("empty pred, non-empty truth", (), ((0, 0),), 0.0),
    ("non-empty pred, empty truth", ((0, 0),), (), 0.0),
    ("identical", FOUR, FOUR, 1.0),
    ("disjoint", ((0, 0),), ((3, 2),), 0.0),
    ("partial overlap 2*3/(4+6)", FOUR, SIX, 0.6),
    ("one pixel inside two", ((0, 0),), ((0, 0), (0, 1)), 2 / 3),
]


@pytest.mark.parametrize(("pred", "truth", "dice"), [c[1:] for c in DICE_TABLE], ids=[c[0] for c in DICE_TABLE])
def test_dice_table(pred: tuple, truth: tuple, dice: float) -> None:
    p = np.zeros((1, 4, *SHAPE), dtype=bool)
    t = np.zeros((1, 4, *SHAPE), dtype=bool)
    p[0, 2], t[0, 2] = _mask(*pred), _mask(*truth)
    pairs = dice_pairs(p, t)
    assert pairs.shape == (1, 4)
    assert pairs[0, 2] == pytest.approx(dice, abs=1e-12)
    np.testing.assert_array_equal(pairs[0, [0, 1, 3]], 1.0)  # the other classes are empty vs empty


def test_kaggle_dice_mean_and_per_class() -> None:
    truth = np.zeros((2, 4, *SHAPE), dtype=bool)
    pred = np.zeros_like(truth)
    truth[0, 0] = _mask(*SIX)
    pred[0, 0] = _mask(*FOUR)  # 0.6
    truth[1, 3] = _mask((0, 0))  # missed: 0.0
    pred[1, 1] = _mask((0, 0))  # false positive: 0.0
    report = kaggle_dice(pred, truth)
    assert report.n_images == 2
    assert report.per_class == pytest.approx(((0.6 + 1) / 2, (1 + 0) / 2, 1.0, (1 + 0) / 2))
    assert report.mean == pytest.approx((0.6 + 0 + 0 + 5) / 8)
    assert report.mean == pytest.approx(sum(report.per_class) / 4)
    table = report.format_table()
    assert "1 pits" in table and "0.80000" in table and f"{report.mean:.5f}" in table and "8 pairs" in table


def test_dice_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match=r"must both be \(N, C, H, W\)"):
        dice_pairs(np.zeros((1, 4, 2, 2), bool), np.zeros((1, 4, 2, 3), bool))
    with pytest.raises(ValueError, match=r"must both be \(N, C, H, W\)"):
        dice_pairs(np.zeros((4, 2, 2), bool), np.zeros((4, 2, 2), bool))
    with pytest.raises(ValueError, match="no images"):
        DiceReport.from_pairs(np.zeros((0, 4)))
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        DiceReport.from_pairs(np.zeros((3, 2)))


def _annotations(masks: np.ndarray, ids: list[str]) -> Annotations:
    return Annotations(tuple(ids), {i: tuple(encode_stack(m)) for i, m in zip(ids, masks, strict=True)}, Layout.LONG)


def test_score_annotations_matches_masks_and_treats_missing_as_empty() -> None:
    rng = np.random.default_rng(7)
    truth_masks = rng.random((6, 4, *SHAPE)) < 0.3
    pred_masks = rng.random((6, 4, *SHAPE)) < 0.3
    pred_masks[2] = truth_masks[2]
    ids = [f"{i}.jpg" for i in range(6)]
    truth = _annotations(truth_masks, ids)
    report = score_annotations(truth, _annotations(pred_masks, ids), SHAPE)
    expected = kaggle_dice(pred_masks, truth_masks)
    assert report.mean == pytest.approx(expected.mean, abs=1e-12)
    assert report.per_class == pytest.approx(expected.per_class, abs=1e-12)
    partial = score_annotations(truth, _annotations(pred_masks[:3], ids[:3]), SHAPE)
    pred_masks[3:] = False
    assert partial.mean == pytest.approx(kaggle_dice(pred_masks, truth_masks).mean, abs=1e-12)
    with pytest.raises(ValueError, match=r"1 predicted images are not in the truth.*'x\.jpg'"):
        score_annotations(truth, _annotations(pred_masks[:1], ["x.jpg"]), SHAPE)


def test_score_annotations_accepts_touching_runs_and_blank_strings() -> None:
    truth = Annotations(("a",), {"a": ("1 4", "", "3 1", "")})
    pred = Annotations(("a",), {"a": ("1 2 3 2", "  ", "2 2", "5 1")})  # touching runs = the same 4 pixels
    report = score_annotations(truth, pred, SHAPE)
    assert report.per_class == pytest.approx((1.0, 1.0, 2 * 1 / 3, 0.0))


def test_real_slice_scores(real_dir: Path) -> None:
    truth = read_annotations(real_dir / "annotations-1000.csv")
    assert score_annotations(truth, truth).mean == 1.0
    nothing = Annotations((), {}, Layout.IMAGE_CLASS)
    report = score_annotations(truth, nothing)
    assert report.mean == pytest.approx(1 - 1429 / 4000)  # all-empty prediction: only the empty pairs score
    assert report.per_class == pytest.approx(tuple(1 - n / 1000 for n in truth.class_counts()))
