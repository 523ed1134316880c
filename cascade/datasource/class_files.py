"""Where the classes of labelled data come from: the argument, a class file next to the data, a CVAT labelmap."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import yaml

from cascade.classes import CLASS_FILE_NAMES, DEFAULT_COLOURS, SEVERSTAL, ClassSet, parse_class_spec
from cascade.datasource.labelled import LABELMAP_NAME, DataSourceError, _ClassesArg

__all__ = []


def _resolve_classes(classes: _ClassesArg, folder: Path, kind: str) -> tuple[ClassSet | None, str | None, str]:
    """``(classes or None to infer, mask_encoding from a class file, where the classes came from)``.

    A class file in ``folder`` describes the data, so its ``mask_encoding`` applies even when ``classes`` is given.
    """
    found = [folder / n for n in CLASS_FILE_NAMES if (folder / n).is_file()]
    if len(found) > 1:
        raise DataSourceError(f"{folder}: several class files ({', '.join(p.name for p in found)}); keep one")
    local = (*_read_class_file(found[0]), str(found[0])) if found else None
    local_encoding = local[1] if local else None
    if isinstance(classes, ClassSet):
        return classes, local_encoding, "the classes argument"
    if classes is not None:
        as_path = Path(classes)
        if isinstance(classes, Path) or as_path.suffix.lower() in (".yaml", ".yml", ".json") or as_path.is_file():
            class_set, encoding = _read_class_file(as_path)
            return class_set, encoding or local_encoding, str(as_path)
        try:
            return parse_class_spec(str(classes), "classes argument"), local_encoding, "the classes argument"
        except ValueError as exc:
            raise DataSourceError(str(exc)) from exc
    if local:
        return local
    if kind == "voc" and (folder / LABELMAP_NAME).is_file():
        return _read_labelmap(folder / LABELMAP_NAME), None, str(folder / LABELMAP_NAME)
    if kind == "kaggle-csv":
        return SEVERSTAL, None, "the default (Severstal)"
    return None, None, "the mask values"


def _read_class_file(path: Path) -> tuple[ClassSet, str | None]:
    if not path.is_file():
        raise DataSourceError(f"class file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        classes = parse_class_spec(data, str(path))
    except DataSourceError:
        raise
    except Exception as exc:  # any read or parse error becomes one message naming the file
        raise DataSourceError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from exc
    encoding = data.get("mask_encoding") if isinstance(data, Mapping) else None
    if encoding is not None and encoding not in ("index", "bits"):
        raise DataSourceError(f"{path}: mask_encoding {encoding!r} is not one of 'index', 'bits'")
    return classes, encoding


def _read_labelmap(path: Path) -> ClassSet:
    """CVAT's ``labelmap.txt``: ``name:r,g,b:parts:actions`` a line, ``background`` first (value 0)."""
    rows: list[tuple[str, tuple[int, ...] | None]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, _, rest = text.partition(":")
        colour_text = rest.split(":", 1)[0].strip()
        try:
            colour = tuple(int(c) for c in colour_text.split(",")) if colour_text else None
        except ValueError:
            colour = ()
        if not name.strip() or (colour is not None and (len(colour) != 3 or not all(0 <= c <= 255 for c in colour))):
            raise DataSourceError(f"{path}:{number}: expected 'name:r,g,b::' (values 0..255), got {line!r}")
        rows.append((name.strip(), colour))
    if not rows or rows[0][0].lower() != "background":
        first = rows[0][0] if rows else "nothing"
        raise DataSourceError(f"{path}: the first label must be 'background' (pixel value 0), got {first!r}")
    ids = tuple(range(1, len(rows)))
    colours = tuple(
        c or DEFAULT_COLOURS[(i - 1) % len(DEFAULT_COLOURS)] for i, (_, c) in zip(ids, rows[1:], strict=True)
    )
    try:
        return ClassSet(ids, tuple(n for n, _ in rows[1:]), colours)
    except ValueError as exc:
        raise DataSourceError(f"{path}: {exc}") from exc
