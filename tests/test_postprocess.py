"""Tests for cascade/postprocess.py: each rule on constructed probability maps."""

from __future__ import annotations

import numpy as np
import pytest

from cascade.manifest import ClassParams
from cascade.postprocess import binarize, effective_min_area, postprocess_map, remove_small_components


def _map_with_blobs() -> np.ndarray:
    """(40, 60) map: a 3x3 blob at 0.9, a 10x10 blob at 0.6, a diagonal pair at 0.8, background 0.1."""
    prob = np.full((40, 60), 0.1, np.float32)
    prob[2:5, 2:5] = 0.9
    prob[20:30, 30:40] = 0.6
    prob[10, 50] = prob[11, 51] = 0.8
    return prob


def test_binarize_is_inclusive() -> None:
    prob = np.array([[0.49, 0.5, 0.51]], np.float32)
    np.testing.assert_array_equal(binarize(prob, 0.5), [[False, True, True]])
    np.testing.assert_array_equal(binarize(prob.astype(np.float16), 0.5), [[False, True, True]])


def test_pixel_threshold() -> None:
    prob = _map_with_blobs()
    assert postprocess_map(prob, 1.0, ClassParams(pixel_threshold=0.5)).sum() == 9 + 100 + 2
    assert postprocess_map(prob, 1.0, ClassParams(pixel_threshold=0.7)).sum() == 9 + 2
    assert postprocess_map(prob, 1.0, ClassParams(pixel_threshold=0.95)).sum() == 0


def test_remove_small_components_uses_8_connectivity() -> None:
    mask = _map_with_blobs() >= 0.5
    kept = remove_small_components(mask, 3)
    assert kept.sum() == 9 + 100  # the diagonal pair is one 2-pixel component, removed
    kept = remove_small_components(mask, 2)
    assert kept.sum() == 9 + 100 + 2
    kept = remove_small_components(mask, 10)
    assert kept.sum() == 100 and kept[20:30, 30:40].all()
    assert remove_small_components(mask, 0) is mask


def test_min_area_floor_empties_the_class() -> None:
    prob = _map_with_blobs()
    assert postprocess_map(prob, 1.0, ClassParams(min_area=111)).sum() == 111
    assert postprocess_map(prob, 1.0, ClassParams(min_area=112)).sum() == 0


def test_components_are_removed_before_the_area_floor() -> None:
    prob = _map_with_blobs()
    params = ClassParams(min_area=105, min_component_area=10)  # 111 px before removal, 100 after
    assert postprocess_map(prob, 1.0, params).sum() == 0
    assert postprocess_map(prob, 1.0, ClassParams(min_area=100, min_component_area=10)).sum() == 100


@pytest.mark.parametrize(("probability", "expected"), [(0.5, 100.0), (1.0, 0.0), (0.75, 50.0), (0.25, 150.0)])
def test_soft_gate_floor_formula(probability: float, expected: float) -> None:
    assert effective_min_area(ClassParams(min_area=100, soft_gate=True), probability) == pytest.approx(expected)
    assert effective_min_area(ClassParams(min_area=100), probability) == 100.0


def test_soft_gate_keeps_small_masks_only_when_confident() -> None:
    prob = np.zeros((20, 20), np.float32)
    prob[:6, :10] = 0.9  # 60 px
    params = ClassParams(min_area=100, soft_gate=True)
    assert postprocess_map(prob, 0.9, params).sum() == 60  # floor 20
    assert postprocess_map(prob, 0.5, params).sum() == 0  # floor 100
    assert postprocess_map(prob, 0.9, ClassParams(min_area=100)).sum() == 0  # hard floor
