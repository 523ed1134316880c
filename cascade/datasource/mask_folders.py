"""voc and mask-folder data: masks matched to images by stem, VOC splits, the ``auto`` encoding rule, classes."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from operator import or_
from pathlib import Path

from cascade.classes import MAX_CLASS_ID, ClassSet
from cascade.datasource.class_files import _resolve_classes
from cascade.datasource.labelled import (
    MASK_FOLDER_DIRS,
    VOC_DIRS,
    VOID_VALUE,
    DataSourceError,
    LabelledSet,
    _ClassesArg,
)
from cascade.datasource.mask_png import _check_values, _flags, _image_size, _read_mask_array, _values, _wxh
from cascade.formats import IMAGE_SUFFIXES, Annotations, Layout, list_image_ids
from cascade.rle import encode

__all__ = []


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _MaskScan:
    """One mask read: its nonzero values and the RLE of each class under each encoding asked for."""

    image_id: str
    path: Path
    shape: tuple[int, int]
    values: frozenset[int]
    by_value: Mapping[int, str]  # index reading: class id -> RLE
    by_flag: Mapping[int, str]  # bits reading: class id -> RLE


def _open_masks(root: Path, kind: str, classes: _ClassesArg, mask_encoding: str, require_masks: bool) -> LabelledSet:
    images_dir, masks_dir = (root / d for d in (VOC_DIRS if kind == "voc" else MASK_FOLDER_DIRS))
    declared, file_encoding, source = _resolve_classes(classes, root, kind)
    encoding = mask_encoding if mask_encoding != "auto" else file_encoding or ("index" if kind == "voc" else "auto")
    all_ids = list_image_ids(images_dir)
    if not all_ids:
        raise DataSourceError(f"{images_dir}: empty data set: no images ({', '.join(IMAGE_SUFFIXES)})")
    by_stem = _stem_map(all_ids, images_dir)
    mask_paths = _list_masks(masks_dir, by_stem, images_dir)
    missing = [i for i in all_ids if i not in mask_paths]
    if missing and require_masks:
        raise DataSourceError(
            f"{images_dir / missing[0]}: image without a mask: expected {masks_dir / Path(missing[0]).stem}.png "
            f"({len(missing)} of {len(all_ids)} images lack one); pass require_masks=False "
            "(cascade evaluate: --skip-unlabelled) to leave them out"
        )
    if missing:
        logger.warning(
            "%s: left out %d of %d images that have no mask in %s", root, len(missing), len(all_ids), masks_dir
        )
    ids = [i for i in all_ids if i in mask_paths]
    if not ids:
        raise DataSourceError(f"{masks_dir}: empty data set: none of the {len(all_ids)} images has a mask")
    splits = _read_splits(root / "ImageSets" / "Segmentation", by_stem, set(ids), images_dir) if kind == "voc" else {}

    scans = [_scan_mask(i, images_dir / i, mask_paths[i], encoding) for i in ids]
    if encoding == "auto":
        encoding = _choose_encoding(reduce(or_, (s.values for s in scans), frozenset()), declared, masks_dir)
    class_set = declared or _infer_classes(scans, encoding, masks_dir)
    for s in scans:
        _check_values(s.path, s.values, class_set, encoding)
    rles = {
        s.image_id: tuple((s.by_value if encoding == "index" else s.by_flag).get(c, "") for c in class_set.ids)
        for s in scans
    }
    ann = Annotations(tuple(ids), rles, Layout.LONG, class_set.ids, {s.image_id: s.shape for s in scans})
    logger.info("%s: classes from %s, %s masks", root, source, encoding)
    return LabelledSet(kind, root, images_dir, ann, class_set, splits, encoding)


def _stem_map(image_ids: Iterable[str], images_dir: Path) -> dict[str, str]:
    by_stem: dict[str, str] = {}
    for image_id in image_ids:
        stem = Path(image_id).stem
        if stem in by_stem:
            raise DataSourceError(
                f"{images_dir}: images {by_stem[stem]!r} and {image_id!r} share the stem {stem!r}; "
                "masks are matched by stem"
            )
        by_stem[stem] = image_id
    return by_stem


def _list_masks(masks_dir: Path, by_stem: Mapping[str, str], images_dir: Path) -> dict[str, Path]:
    """Image id -> its mask PNG; masks without an image and non-PNG masks are errors."""
    masks: dict[str, Path] = {}
    for path in sorted(masks_dir.iterdir()):
        suffix = path.suffix.lower()
        if not path.is_file() or suffix not in IMAGE_SUFFIXES:
            continue
        if suffix != ".png":
            raise DataSourceError(f"{path}: masks must be PNG files (lossless), got {suffix}")
        image_id = by_stem.get(path.stem)
        if image_id is None:
            raise DataSourceError(f"{path}: mask without an image: no {path.stem}.* in {images_dir}")
        if image_id in masks:
            raise DataSourceError(f"{path}: a second mask for {image_id} (first {masks[image_id].name})")
        masks[image_id] = path
    return masks


def _read_splits(
    sets_dir: Path, by_stem: Mapping[str, str], kept: set[str], images_dir: Path
) -> dict[str, tuple[str, ...]]:
    if not sets_dir.is_dir():
        return {}
    names = set(by_stem.values())
    splits: dict[str, tuple[str, ...]] = {}
    for path in sorted(sets_dir.glob("*.txt")):
        ids: list[str] = []
        first: dict[str, int] = {}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            token = line.strip()
            if not token:
                continue
            image_id = by_stem.get(token) or (token if token in names else None)
            if len(token.split()) != 1 or image_id is None:
                raise DataSourceError(
                    f"{path}:{number}: {token!r} names no image in {images_dir} (expected one image id a line)"
                )
            if image_id in first:
                raise DataSourceError(f"{path}:{number}: {token!r} again (first at line {first[image_id]})")
            first[image_id] = number
            ids.append(image_id)
        dropped = sum(i not in kept for i in ids)
        if dropped:
            logger.warning("%s: %d of its images have no mask and are left out", path, dropped)
        splits[path.stem] = tuple(i for i in ids if i in kept)
    return splits


def _scan_mask(image_id: str, image_path: Path, mask_path: Path, encoding: str) -> _MaskScan:
    value = _read_mask_array(mask_path)
    shape = _image_size(image_path)
    if value.shape != shape:
        raise DataSourceError(
            f"{mask_path}: mask is {_wxh(value.shape)} (width x height) but its image {image_path} is {_wxh(shape)}"
        )
    values = _values(value)
    by_value: dict[int, str] = {}
    if encoding in ("index", "auto"):
        by_value = {v: encode(value == v) for v in sorted(values) if v <= MAX_CLASS_ID}
    by_flag: dict[int, str] = {}
    if encoding in ("bits", "auto"):
        flags = reduce(or_, values, 0)
        for class_id in range(1, MAX_CLASS_ID + 1):
            bit = 1 << (class_id - 1)
            if flags & bit:
                holders = [v for v in values if v & bit]
                reuse = len(holders) == 1 and holders[0] in by_value
                by_flag[class_id] = by_value[holders[0]] if reuse else encode((value & bit) != 0)
    return _MaskScan(image_id, mask_path, shape, values, by_value, by_flag)


def _choose_encoding(values: frozenset[int], declared: ClassSet | None, masks_dir: Path) -> str:
    """The ``auto`` rule of the module docstring, over the nonzero values of every mask."""
    fits_bits = _fits_bits(values, declared)
    if VOID_VALUE in values:
        encoding, why = "index", f"value {VOID_VALUE} (void) occurs"
    elif declared is not None:
        others = sorted(v for v in values if v not in declared.ids)
        if others and fits_bits:
            encoding, why = "bits", f"values {others} are not class ids but ORs of the classes' flags"
        else:
            encoding, why = "index", "the values are class ids" if not others else f"values {others} are not flags"
    elif values == set(range(1, len(values) + 1)):
        encoding, why = "index", "the values are 1..K"
    elif fits_bits:
        encoding, why = "bits", "the values are not 1..K and every flag occurs alone"
    else:
        encoding, why = "index", "the values are neither 1..K nor flags that each occur alone"
    if encoding == "index" and fits_bits and max(values, default=0) >= 3:
        logger.warning(
            "%s: mask values %s read as class indices (%s); they are also valid bit flags. "
            "Set mask_encoding ('index' or 'bits') to settle it",
            masks_dir,
            sorted(values),
            why,
        )
    else:
        logger.info("%s: mask values %s read as %s (%s)", masks_dir, sorted(values), encoding, why)
    return encoding


def _fits_bits(values: frozenset[int], declared: ClassSet | None) -> bool:
    flags = reduce(or_, values, 0)
    if declared is not None:
        return not flags & ~_flags(declared.ids)
    return flags < 1 << MAX_CLASS_ID and all(not flags & (1 << b) or (1 << b) in values for b in range(MAX_CLASS_ID))


def _infer_classes(scans: Sequence[_MaskScan], encoding: str, masks_dir: Path) -> ClassSet:
    """Class ids 1..K, K the largest class found in the masks."""
    if encoding == "index":
        limit, allowed = MAX_CLASS_ID, f"1..{MAX_CLASS_ID} (0 = background, {VOID_VALUE} = void)"
        found = {v for s in scans for v in s.values if v != VOID_VALUE}
    else:
        limit, allowed = (1 << MAX_CLASS_ID) - 1, f"ORs of flags 1, 2, 4, ..., {1 << (MAX_CLASS_ID - 1)}"
        found = {c for s in scans for c in s.by_flag}
    for s in scans:
        bad = sorted(v for v in s.values if v > limit and not (encoding == "index" and v == VOID_VALUE))
        if bad:
            raise DataSourceError(
                f"{s.path}: values {bad} are not classes with {encoding} encoding; found {sorted(s.values)}, "
                f"allowed {allowed}"
            )
    if not found:
        raise DataSourceError(
            f"{masks_dir}: every mask is background only, so no classes can be inferred; pass classes"
        )
    ids = tuple(range(1, max(found) + 1))
    absent = sorted(set(ids) - found)
    if absent:
        logger.warning("%s: classes %s inferred; %s never occur in the masks", masks_dir, list(ids), absent)
    return ClassSet.with_ids(ids)
