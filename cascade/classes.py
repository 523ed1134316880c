"""The class set of a task: class ids, names and display colours, in array order.

Severstal (4 classes) is the default profile; a bundle's manifest carries its own class set (e.g. NEU-Seg's
3 classes), and everything downstream — gate, post-processing, RLE/CSV rows, scoring, the service's JSON
and the web page — takes the class set from there. Class ids are positive integers as they appear in every
file format and API; array index ``k`` holds ``ids[k]``. Mask PNGs store classes as bit flags (bit
``id - 1``), so ids go up to ``MAX_CLASS_ID``.

A class file (``classes.yaml`` / ``classes.json`` next to the data, or ``--classes FILE``) is one of::

    classes: [{id: 1, name: inclusion, colour: [230, 25, 75]}, {id: 2, name: patches}, ...]
    classes: {1: inclusion, 2: patches, 3: scratches}
    classes: [inclusion, patches, scratches]          # ids 1, 2, 3
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cascade.constants import CLASS_IDS, CLASS_NAMES

__all__ = [
    "CLASS_FILE_NAMES",
    "DEFAULT_COLOURS",
    "MAX_CLASS_ID",
    "SEVERSTAL",
    "ClassSet",
    "parse_class_spec",
    "read_class_file",
]

MAX_CLASS_ID: int = 8
"""Largest class id: mask PNGs hold one bit per class in 8 bits."""

DEFAULT_COLOURS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (255, 200, 0),
    (145, 30, 180),
    (70, 240, 240),
    (245, 130, 48),
    (240, 50, 230),
)
"""Display colour (RGB) of class id ``k`` when the class set names none: ``DEFAULT_COLOURS[k - 1]``."""

CLASS_FILE_NAMES: tuple[str, ...] = ("classes.yaml", "classes.yml", "classes.json")
"""Names of a class file looked for next to a data set."""


@dataclass(frozen=True)
class ClassSet:
    """Class ids, names and display colours, in array order.

    Attributes:
        ids: distinct ids in ``1..MAX_CLASS_ID``, ascending.
        names: one non-empty name per id.
        colours: one RGB triple per id (default: ``DEFAULT_COLOURS`` by id).
    """

    ids: tuple[int, ...]
    names: tuple[str, ...]
    colours: tuple[tuple[int, int, int], ...] = ()

    def __post_init__(self) -> None:
        ids = tuple(self.ids)
        if not ids or any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
            raise ValueError(f"class ids must be a non-empty list of integers, got {list(ids)}")
        if len(set(ids)) != len(ids) or list(ids) != sorted(ids) or not all(1 <= i <= MAX_CLASS_ID for i in ids):
            raise ValueError(f"class ids must be distinct, ascending and within 1..{MAX_CLASS_ID}, got {list(ids)}")
        names = tuple(self.names)
        if len(names) != len(ids) or not all(isinstance(n, str) and n.strip() for n in names):
            raise ValueError(f"need one non-empty name per class id {list(ids)}, got {list(names)}")
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be distinct, got {list(names)}")
        colours = tuple(self.colours) or tuple(DEFAULT_COLOURS[i - 1] for i in ids)
        if len(colours) != len(ids):
            raise ValueError(f"need one colour per class id {list(ids)}, got {len(colours)}")
        colours = tuple(_check_colour(c, f"class {i}") for i, c in zip(ids, colours, strict=True))
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "names", tuple(n.strip() for n in names))
        object.__setattr__(self, "colours", colours)

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, class_id: int) -> int:
        """Array index of ``class_id``; ``ValueError`` listing the valid ids otherwise."""
        if class_id not in self.ids:
            raise ValueError(f"unknown class id {class_id!r}; valid ids are {list(self.ids)}")
        return self.ids.index(class_id)

    def name(self, class_id: int) -> str:
        """Name of ``class_id``."""
        return self.names[self.index(class_id)]

    def to_dict(self) -> dict[str, Any]:
        """``{"classes": [{"id", "name", "colour"}, ...]}`` (the class-file form)."""
        return {
            "classes": [
                {"id": i, "name": n, "colour": list(c)}
                for i, n, c in zip(self.ids, self.names, self.colours, strict=True)
            ]
        }

    @classmethod
    def with_ids(cls, ids: Sequence[int]) -> ClassSet:
        """A class set named ``class_<id>`` (for data that come without names)."""
        return cls(tuple(ids), tuple(f"class_{i}" for i in ids))


def _check_colour(value: Any, where: str) -> tuple[int, int, int]:
    if isinstance(value, str):
        text = value.strip().removeprefix("#")
        if len(text) == 6:
            try:
                return (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16))
            except ValueError:
                pass
        raise ValueError(f"{where}: colour {value!r} is not '#rrggbb' or [r, g, b]")
    if (
        isinstance(value, Sequence)
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)
    ):
        return (int(value[0]), int(value[1]), int(value[2]))
    raise ValueError(f"{where}: colour {value!r} is not '#rrggbb' or [r, g, b] with values 0..255")


def parse_class_spec(data: Any, where: str = "classes") -> ClassSet:
    """A ``ClassSet`` from a class file's content (see the module docstring) or a comma list of names.

    Raises:
        ValueError: a malformed spec, naming ``where``.
    """
    if isinstance(data, Mapping) and "classes" in data:
        data = data["classes"]
    if isinstance(data, str):
        data = [n.strip() for n in data.split(",") if n.strip()]
    try:
        if isinstance(data, Mapping):
            items = sorted((int(k), v) for k, v in data.items())
            return ClassSet(tuple(k for k, _ in items), tuple(str(v) for _, v in items))
        if isinstance(data, Sequence) and data and all(isinstance(d, str) for d in data):
            return ClassSet(tuple(range(1, len(data) + 1)), tuple(data))
        if isinstance(data, Sequence) and data and all(isinstance(d, Mapping) for d in data):
            allowed = {"id", "name", "colour", "color"}
            for d in data:
                if set(d) - allowed or "id" not in d or "name" not in d:
                    raise ValueError(f"each class needs 'id' and 'name' (optional 'colour'), got {dict(d)}")
            rows = sorted(data, key=lambda d: int(d["id"]))
            colours = [d.get("colour", d.get("color")) for d in rows]
            ids = tuple(int(d["id"]) for d in rows)
            return ClassSet(
                ids,
                tuple(str(d["name"]) for d in rows),
                tuple(
                    c if c is not None else DEFAULT_COLOURS[(i - 1) % len(DEFAULT_COLOURS)]
                    for i, c in zip(ids, colours, strict=True)
                ),
            )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from exc
    raise ValueError(
        f"{where}: expected a list of names, a mapping id -> name, or a list of {{id, name, colour}}; got {data!r}"
    )


def read_class_file(path: str | Path) -> ClassSet:
    """Read a class file (YAML or JSON; see the module docstring).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable or malformed, naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        raise ValueError(f"{path}: not valid {path.suffix.lstrip('.').upper() or 'YAML'}: {exc}") from exc
    return parse_class_spec(data, str(path))


SEVERSTAL = ClassSet(CLASS_IDS, CLASS_NAMES, DEFAULT_COLOURS[:4])
"""The default profile: Severstal's four classes."""
