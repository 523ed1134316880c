"""Tests for training/oof.py: the out-of-fold table reads back exactly, tiny probabilities included."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.oof import OofTable, read_oof, write_oof


def test_round_trip_keeps_float32_probabilities_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    probabilities = np.concatenate(
        [
            np.array([[1e-12, 3e-9, 4e-7, 1.0 - 6e-8], [0.0, 1.0, 0.5, 2e-30]], dtype=np.float32),
            (10.0 ** rng.uniform(-12, 0, (20, 4))).astype(np.float32),
        ]
    )
    table = OofTable(
        image_ids=tuple(f"{i:03d}.jpg" for i in range(len(probabilities))),
        folds=np.arange(len(probabilities)) % 3,
        probabilities=probabilities,
        labels=rng.random(probabilities.shape) < 0.3,
        class_ids=(1, 2, 3, 4),
    )
    back = read_oof(write_oof(tmp_path / "oof.csv", table))
    assert back.image_ids == table.image_ids and back.class_ids == table.class_ids
    np.testing.assert_array_equal(back.folds, table.folds)
    np.testing.assert_array_equal(back.labels, table.labels)
    np.testing.assert_array_equal(back.probabilities.astype(np.float32), probabilities)
    for k in range(4):  # no ties the classifier did not make: the ranking tuning sees is the classifier's
        assert len(np.unique(back.probabilities[:, k])) == len(np.unique(probabilities[:, k]))
