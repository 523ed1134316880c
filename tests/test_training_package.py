"""Tests for training/package.py: the provenance a new bundle records (the pipeline test packages a bundle)."""

from __future__ import annotations

import re

import pytest

from cascade import __version__
from training.package import make_provenance


def test_provenance_fields() -> None:
    provenance = make_provenance(dataset="synth", metrics={"dice": 0.9}, config={"epochs": 3}, note="x")
    assert set(provenance) == {"dataset", "metrics", "code_version", "created", "config", "note"}
    assert provenance["dataset"] == "synth" and provenance["note"] == "x"
    assert provenance["metrics"] == {"dice": 0.9} and provenance["config"] == {"epochs": 3}
    assert re.fullmatch(re.escape(__version__) + r"(\+g[0-9a-f]{4,40})?", provenance["code_version"])
    assert re.fullmatch(r"20\d\d-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", provenance["created"])


def test_provenance_without_git_is_the_bare_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("training.package._git_commit", lambda: None)
    assert make_provenance()["code_version"] == __version__
