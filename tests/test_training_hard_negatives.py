"""Tests of training.mine_hard_negatives: selection rules on constructed probabilities, CSV round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.config import HardNegativeConfig
from training.mine_hard_negatives import (
    HardNegative,
    mine_hard_negatives,
    read_hard_negatives,
    write_hard_negatives,
)

IDS = ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg"]


def _case() -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((6, 4), dtype=bool)
    labels[[0, 5], 0] = True  # class 1: a, f positive
    labels[[3], 2] = True  # class 3: d positive
    probabilities = np.zeros((6, 4))
    probabilities[:, 0] = [0.9, 0.8, 0.5, 0.2, 0.5, 0.95]  # negatives b 0.8, c 0.5, e 0.5, d 0.2
    probabilities[:, 1] = [0.9, 0.9, 0.9, 0.9, 0.9, 0.9]  # class 2 has no positives -> nothing mined
    probabilities[:, 2] = [0.7, 0.1, 0.65, 0.99, 0.3, 0.64]  # d positive; a 0.7, c 0.65, f 0.64
    return probabilities, labels


def test_hard_negatives_exact_selection() -> None:
    probabilities, labels = _case()
    config = HardNegativeConfig(threshold=0.4, max_share=1.0, random_share=0.0)
    got = mine_hard_negatives(IDS, probabilities, labels, config)
    assert got == [
        # class 1: 2 positives -> at most 2 of b (0.8), c (0.5), e (0.5); ties broken by image id
        HardNegative("b.jpg", 1, 0.8, "hard"),
        HardNegative("c.jpg", 1, 0.5, "hard"),
        # class 3: 1 positive -> only the highest of a, c, f
        HardNegative("a.jpg", 3, 0.7, "hard"),
    ]


def test_hard_negatives_threshold_and_share() -> None:
    probabilities, labels = _case()
    got = mine_hard_negatives(
        IDS, probabilities, labels, HardNegativeConfig(threshold=0.6, max_share=3.0, random_share=0)
    )
    assert [(n.image_id, n.class_id) for n in got] == [("b.jpg", 1), ("a.jpg", 3), ("c.jpg", 3), ("f.jpg", 3)]
    none = mine_hard_negatives(
        IDS, probabilities, labels, HardNegativeConfig(threshold=0.99, max_share=1, random_share=0)
    )
    assert none == []


def test_random_share_draws_other_negatives_deterministically() -> None:
    probabilities, labels = _case()
    config = HardNegativeConfig(threshold=0.4, max_share=0.5, random_share=1.0)
    first = mine_hard_negatives(IDS, probabilities, labels, config, seed=3)
    assert first == mine_hard_negatives(IDS, probabilities, labels, config, seed=3)
    class1 = [n for n in first if n.class_id == 1]
    assert [(n.image_id, n.kind) for n in class1[:1]] == [("b.jpg", "hard")]
    randoms = [n for n in class1 if n.kind == "random"]
    assert len(randoms) == 2  # round(1.0 * 2 positives)
    assert {n.image_id for n in randoms} <= {"c.jpg", "d.jpg", "e.jpg"}  # negatives not already picked


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="must be"):
        mine_hard_negatives(IDS[:2], np.zeros((3, 4)), np.zeros((3, 4), bool), HardNegativeConfig())


def test_csv_round_trip(tmp_path: Path) -> None:
    rows = [HardNegative("x.jpg", 2, 0.731, "hard"), HardNegative("y.jpg", 4, 0.01, "random")]
    path = write_hard_negatives(tmp_path / "hn.csv", rows)
    assert path.read_text().splitlines()[0] == "ImageId,ClassId,probability,kind"
    assert read_hard_negatives(path) == rows
