"""The separability bench's crop pairing: positives hold the class, negatives lie at the same columns of clean ones."""

from __future__ import annotations

import numpy as np
import pytest

from bench.bench_separability import CROP, paired_crops


def _columns() -> np.ndarray:
    columns = np.zeros((6, 1600), dtype=bool)
    columns[0, 10:14] = True  # near the left edge
    columns[2, 1590:1600] = True  # at the right edge
    columns[4, 700:900] = True
    return columns


def test_every_positive_holds_the_class_and_its_negative_is_clean_at_the_same_columns() -> None:
    columns = _columns()
    positives, negatives = paired_crops(columns, np.random.default_rng(0), per_image=5)
    assert len(positives) == len(negatives) == 15
    assert {i for i, _ in positives} == {0, 2, 4}
    for (i, x0), (j, y0) in zip(positives, negatives, strict=True):
        assert 0 <= x0 <= 1600 - CROP and x0 == y0
        assert columns[i, x0 : x0 + CROP].any()
        assert not columns[j].any()


def test_no_clean_image_gives_no_pairs_and_narrow_images_are_refused() -> None:
    assert paired_crops(np.ones((3, 400), dtype=bool), np.random.default_rng(0)) == ([], [])
    with pytest.raises(ValueError, match="at least 256 columns"):
        paired_crops(np.zeros((3, 100), dtype=bool), np.random.default_rng(0))
