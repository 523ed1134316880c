"""Tests for cascade/gate.py."""

from __future__ import annotations

import numpy as np
import pytest

from cascade.gate import GATE_MODES, check_params, gate
from cascade.manifest import ClassParams

PARAMS = tuple(ClassParams(prob_threshold=t) for t in (0.5, 0.2, 0.9, 0.0))


def test_gate_opens_at_or_above_threshold() -> None:
    probs = np.array([[0.5, 0.19, 0.95, 0.0], [0.49, 0.2, 0.9, 0.3]])
    expected = np.array([[True, False, True, True], [False, True, True, True]])
    np.testing.assert_array_equal(gate(probs, PARAMS, "cascade"), expected)


def test_segment_all_opens_every_gate() -> None:
    probs = np.zeros((3, 4))
    assert gate(probs, PARAMS, "segment_all").all()
    assert not gate(probs, [ClassParams(prob_threshold=1.0)] * 4, "cascade").any()


def test_gate_bad_mode_lists_allowed() -> None:
    with pytest.raises(ValueError, match="segment_all") as err:
        gate(np.zeros((1, 4)), PARAMS, "everything")
    assert "everything" in str(err.value) and all(m in str(err.value) for m in GATE_MODES)


@pytest.mark.parametrize("params", [PARAMS[:3], ClassParams(), [*PARAMS[:3], 0.5], None])
def test_check_params_rejects(params: object) -> None:
    with pytest.raises(ValueError, match="4 ClassParams"):
        check_params(params)


def test_gate_rejects_bad_probability_shape() -> None:
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        gate(np.zeros((2, 3)), PARAMS)


def test_closed_class_never_opens_even_at_probability_one() -> None:
    params = (*PARAMS[:2], ClassParams(prob_threshold=0.0, closed=True), PARAMS[3])
    probs = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    passed = gate(probs, params, "cascade")
    assert not passed[:, 2].any()
    np.testing.assert_array_equal(np.delete(passed, 2, axis=1), np.delete(gate(probs, PARAMS, "cascade"), 2, axis=1))
    assert gate(probs, params, "segment_all").all()  # segment_all still runs every segmenter


def test_closed_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match=r"ClassParams\.closed must be true or false"):
        ClassParams(closed=1)  # type: ignore[arg-type]
