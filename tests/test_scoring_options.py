"""Tests for cascade/scoring/options.py: the options both folder engines share, validated once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cascade.formats import Layout
from cascade.scoring import DEFAULT_STALL_TIMEOUT_S, ScoreOptions


def test_defaults_and_normalisation() -> None:
    options = ScoreOptions()
    assert (options.batch_size, options.layout, options.mode) == (4, Layout.IMAGE_CLASS, "cascade")
    assert options.resume and options.fsync and options.masks_dir is None
    assert options.stall_timeout_s == DEFAULT_STALL_TIMEOUT_S
    given = ScoreOptions(masks_dir="out/masks", stall_timeout_s=30)  # type: ignore[arg-type]
    assert given.masks_dir == Path("out/masks") and isinstance(given.stall_timeout_s, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        given.batch_size = 8  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("batch_size", 0, r"batch_size=0; allowed: an integer >= 1"),
        ("batch_size", 2.0, r"batch_size=2.0; allowed: an integer >= 1"),
        ("batch_size", True, r"batch_size=True; allowed: an integer >= 1"),
        ("layout", "long", r"layout='long'; allowed: Layout.IMAGE_CLASS, Layout.LONG"),
        ("mode", "gated", r"unknown mode 'gated'; allowed modes are \['cascade', 'segment_all'\]"),
        ("resume", "yes", r"resume='yes'; allowed: True or False"),
        ("fsync", None, r"fsync=None; allowed: True or False"),
        ("masks_dir", 3, r"masks_dir=3; allowed: a folder path or None"),
        ("stall_timeout_s", 0, r"stall timeout must be a positive number of seconds or None \(off\), got 0"),
    ],
)
def test_bad_options_name_the_field_and_what_is_allowed(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScoreOptions(**{field: value})  # type: ignore[arg-type]
