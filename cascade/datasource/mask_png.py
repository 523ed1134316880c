"""Mask PNG pixels: reading and checking index or bit-flag values, writing palette PNGs, image headers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import reduce
from operator import or_
from pathlib import Path

import numpy as np
from PIL import Image

from cascade.classes import ClassSet
from cascade.datasource.labelled import VOID_VALUE, DataSourceError
from cascade.imageio import SUPPORTED_FORMATS

__all__ = ["read_mask_png"]

_MASK_MODES = ("L", "P", "1", "I;16", "I;16L", "I;16B", "I")


def read_mask_png(path: str | Path, classes: ClassSet, encoding: str) -> np.ndarray:
    """Read one mask PNG.

    Args:
        path: the PNG (one integer per pixel).
        classes: the class set.
        encoding: ``"index"`` or ``"bits"``.

    Returns:
        ``(C, H, W)`` bool, index ``k`` = ``classes.ids[k]``.

    Raises:
        DataSourceError: unreadable, RGB, or values that are not classes of ``classes``.
    """
    if encoding not in ("index", "bits"):
        raise DataSourceError(f"encoding {encoding!r} is not one of 'index', 'bits'")
    path = Path(path)
    value = _read_mask_array(path)
    _check_values(path, _values(value), classes, encoding)
    ids = np.array(classes.ids)[:, None, None]
    if encoding == "index":
        return value[None] == ids
    return (value[None] & (1 << (ids - 1))) != 0


def _read_mask_array(path: Path) -> np.ndarray:
    """``(H, W)`` integer values of a mask PNG (palette indices for mode P)."""
    try:
        with Image.open(path) as img:
            if img.mode not in _MASK_MODES:
                raise DataSourceError(
                    f"{path}: mask has mode {img.mode} ({len(img.getbands())} channels); export class-index or "
                    "bit-flag PNGs with one value per pixel (mode L or P; palette indices are used, not colours)"
                )
            value = np.asarray(img)
    except DataSourceError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataSourceError(f"{path}: cannot read mask: {exc}") from exc
    if value.dtype == bool:
        value = value.astype(np.uint8)
    if value.dtype.kind == "i":
        if value.min(initial=0) < 0:
            raise DataSourceError(f"{path}: mask has negative values; allowed 0..{VOID_VALUE}")
        value = value.astype(np.int64)
    return value


def _values(value: np.ndarray) -> frozenset[int]:
    """Distinct nonzero values of ``(H, W)`` integers."""
    uint8 = value.dtype == np.uint8
    found = np.flatnonzero(np.bincount(value.ravel(), minlength=256)) if uint8 else np.unique(value)
    return frozenset(int(v) for v in found if v)


def _check_values(path: Path, values: frozenset[int], classes: ClassSet, encoding: str) -> None:
    if encoding == "index":
        bad = sorted(v for v in values if v not in classes.ids and v != VOID_VALUE)
        allowed = f"0 (background), class ids {list(classes.ids)}, {VOID_VALUE} (void, read as background)"
    else:
        bad = sorted(v for v in values if v & ~_flags(classes.ids))
        flags = [1 << (i - 1) for i in classes.ids]
        allowed = f"0 and ORs of the flags {flags} (classes {list(classes.ids)})"
    if bad:
        raise DataSourceError(
            f"{path}: unknown class values {bad} with {encoding} encoding; found {sorted(values)}, allowed: {allowed}"
        )


def _flags(ids: Iterable[int]) -> int:
    return reduce(or_, (1 << (i - 1) for i in ids), 0)


def _image_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` from the image header."""
    try:
        with Image.open(path) as img:
            if img.format not in SUPPORTED_FORMATS:
                raise DataSourceError(f"{path}: image format {img.format}; allowed: {', '.join(SUPPORTED_FORMATS)}")
            width, height = img.size
    except DataSourceError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataSourceError(f"{path}: cannot read image: {exc}") from exc
    return height, width


def _wxh(shape: Sequence[int]) -> str:
    return f"{shape[1]}x{shape[0]}"


def _write_mask(path: Path, masks: np.ndarray, classes: ClassSet, encoding: str, image_id: str) -> None:
    """Write ``masks`` ``(C, H, W)`` bool as a palette PNG in ``encoding``."""
    if encoding == "bits":
        from cascade.scoring.masks import write_mask_png

        write_mask_png(path, masks, classes.ids, classes.colours)
        return
    overlap = masks.sum(axis=0) > 1
    if overlap.any():
        both = [c for c, m in zip(classes.ids, masks, strict=True) if (m & overlap).any()]
        raise DataSourceError(f"{image_id}: classes {both} overlap, which index masks cannot hold; use encoding='bits'")
    value = np.zeros(masks.shape[1:], dtype=np.uint8)
    palette = np.zeros((256, 3), dtype=np.uint8)
    for class_id, mask, colour in zip(classes.ids, masks, classes.colours, strict=True):
        value[mask] = class_id
        palette[class_id] = colour
    img = Image.frombytes("P", (value.shape[1], value.shape[0]), np.ascontiguousarray(value).tobytes())
    img.putpalette(palette.reshape(-1).tolist())
    img.save(path, format="PNG")
