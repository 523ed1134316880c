"""Tests for cascade/typed_config.py: strict dict -> dataclass conversion, errors naming the key path."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from cascade.typed_config import Dialect, from_dict, to_dict


@dataclass(frozen=True)
class Inner:
    size: int
    ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=lambda: Inner(1))
    by_id: dict[int, Inner] = field(default_factory=dict)
    pair: tuple[int, int] | None = None
    flags: tuple[bool, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


RECIPE = Dialect(name=lambda path: f"r.yaml.{path}" if path else "r.yaml")
FIELDS = Dialect.of_fields(lambda path: f"doc field '{path}'" if path else "doc")


def test_builds_nested_types_and_round_trips() -> None:
    data = {"name": "a", "inner": {"size": 2}, "by_id": {"3": {"size": 4, "ratio": 2}}, "pair": [5, 6]}
    built = from_dict(Outer, data, RECIPE)
    assert built == Outer("a", Inner(2), {3: Inner(4, 2.0)}, (5, 6))
    assert isinstance(built.by_id[3].ratio, float)
    assert from_dict(Outer, to_dict(built), RECIPE) == built
    assert to_dict(built)["by_id"] == {"3": {"size": 4, "ratio": 2.0}}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"inner": {"size": 1, "sise": 2}},
            r"^r\.yaml\.inner: unknown key\(s\) \['sise'\]; allowed: \['size', 'ratio'\]$",
        ),
        ({"inner": {}}, r"^r\.yaml\.inner: missing key\(s\) \['size'\]$"),
        ({"inner": 3}, r"^r\.yaml\.inner: expected a mapping for Inner, got int$"),
        ({"inner": {"size": True}}, r"^r\.yaml\.inner\.size: expected an integer, got True$"),
        ({"by_id": {"x": {"size": 1}}}, r"^r\.yaml\.by_id: key 'x' is not an integer$"),
        ({"by_id": {"2": {"size": 0}}}, r"^r\.yaml\.by_id\.2: size must be >= 1, got 0$"),
        ({"pair": [1]}, r"^r\.yaml\.pair: expected 2 values, got 1"),
        ({"flags": [True, "no"]}, r"^r\.yaml\.flags\[1\] must be true or false, got 'no'$"),
        ({"flags": "yes"}, r"^r\.yaml\.flags must be a list, got str$"),
    ],
)
def test_errors_name_the_key_path(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        from_dict(Outer, data, RECIPE)


def test_a_dialect_words_its_own_errors_and_may_leave_scalars_to_the_dataclasses() -> None:
    with pytest.raises(ValueError, match=r"^doc field 'inner' has unknown field\(s\) \['b'\]; allowed fields are"):
        from_dict(Outer, {"inner": {"size": 1, "b": 0}}, FIELDS)
    with pytest.raises(ValueError, match=r"^doc is missing field\(s\) \['name'\]$"):
        from_dict(Outer, {}, FIELDS, required=("name",))
    loose = Dialect.of_fields(FIELDS.name, check_scalars=False)
    assert from_dict(Outer, {"name": 7}, loose).name == 7  # no __post_init__ check on name: passed as given
    with pytest.raises(ValueError, match=r"^doc field 'name': expected a string, got 7$"):
        from_dict(Outer, {"name": 7}, FIELDS)
