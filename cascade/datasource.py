"""Labelled data as users have them: a Kaggle CSV, a Pascal VOC folder or a folder of mask PNGs.

``open_labelled(path)`` detects the kind (``detect_kind``) and returns a ``LabelledSet`` whose
``annotations`` hold one Kaggle RLE per class and image, whatever the source:

- ``kaggle-csv``: a ``.csv`` file, or a folder holding ``train.csv`` (``annotations=``); images in
  ``train_images/``, else ``images/``, next to the CSV (``images=``). Listed images without rows are clean.
- ``voc``: ``JPEGImages/<id>.<ext>`` + ``SegmentationClass/<id>.png`` (+ ``ImageSets/Segmentation/<split>.txt``,
  one id a line, which become ``splits``).
- ``mask-folder``: ``images/<stem>.<ext>`` + ``masks/<stem>.png``.

A folder matching several kinds is read by the first of voc, mask-folder, kaggle-csv; pass ``annotations=``
(or the CSV file) to read its CSV instead.

Classes, first found: the ``classes`` argument (a ``ClassSet``, a class file, or names ``"a,b,c"`` = ids
1, 2, 3); a class file (``CLASS_FILE_NAMES``) in the data folder; for voc, a CVAT ``labelmap.txt``
(``name:r,g,b::`` lines, ``background`` first = value 0, class id = label line index); otherwise Severstal's
four for kaggle-csv, and for mask PNGs ids ``1..K`` where K is the largest class found in the masks.
A class file may also say ``mask_encoding: index`` or ``bits``; one next to the data keeps saying it when
``classes`` is given.

Mask PNGs hold one integer per pixel (mode L, P — palette *indices*, not colours —, 1 or 16-bit); RGB
masks are refused. Two encodings (``MASK_ENCODINGS``):

- ``index``: pixel value = class id, 0 = background; 255 is VOC's "void / ignore" border and is read as
  background. Classes cannot overlap.
- ``bits``: bit ``id - 1`` set = class ``id`` present (1, 2, 4, 8, ... OR-ed), so overlaps survive.

``mask_encoding="auto"`` takes the class file's ``mask_encoding``, else ``index`` for voc, else (mask-folder)
looks at V, the nonzero values found in all masks:

1. 255 in V: ``index``.
2. With declared classes: ``bits`` when some value is not a class id and every value is an OR of the
   classes' flags; else ``index``.
3. Without: ``index`` when V is exactly ``1..K`` (NEU-Seg's 1, 2, 3); else ``bits`` when every flag set in
   some value also occurs alone as a value (the real Severstal masks' 1, 4, 8); else ``index``.

When the other reading would fit as well and means something else (a value of 3 or more), a warning
says so; set ``mask_encoding`` to settle it. Errors are ``DataSourceError``s naming the file: sizes that
differ, unknown values, images without masks and masks without images, split lines naming no image,
unreadable files, an empty set. With ``require_masks=False`` images without a mask are **left out** of the
set (a warning gives the count); this never applies to kaggle-csv, where a missing row means a clean image.
Images are checked by header only (format and size); their pixels are decoded when used.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import reduce
from operator import or_
from pathlib import Path
from types import MappingProxyType

import numpy as np
import yaml
from PIL import Image

from cascade.classes import CLASS_FILE_NAMES, DEFAULT_COLOURS, MAX_CLASS_ID, SEVERSTAL, ClassSet, parse_class_spec
from cascade.formats import IMAGE_SUFFIXES, Annotations, Layout, list_image_ids, read_annotations
from cascade.imageio import SUPPORTED_FORMATS
from cascade.rle import RLEError, decode_runs, encode

__all__ = [
    "DATA_KINDS",
    "DEFAULT_ANNOTATIONS",
    "KAGGLE_IMAGE_DIRS",
    "LABELMAP_NAME",
    "MASK_ENCODINGS",
    "MASK_FOLDER_DIRS",
    "VOC_DIRS",
    "VOID_VALUE",
    "DataSourceError",
    "LabelledSet",
    "detect_kind",
    "open_labelled",
    "read_mask_png",
    "write_mask_folder",
]

logger = logging.getLogger(__name__)

DATA_KINDS: tuple[str, ...] = ("kaggle-csv", "voc", "mask-folder")
"""Kinds of labelled data ``open_labelled`` reads."""

MASK_ENCODINGS: tuple[str, ...] = ("auto", "index", "bits")
"""How mask PNG values map to classes (see the module docstring)."""

DEFAULT_ANNOTATIONS = "train.csv"
"""The annotations CSV looked for in a kaggle-csv folder."""
KAGGLE_IMAGE_DIRS: tuple[str, ...] = ("train_images", "images")
"""Images folders looked for next to a Kaggle CSV, in order."""
VOC_DIRS: tuple[str, str] = ("JPEGImages", "SegmentationClass")
"""Images and masks folders of a VOC set."""
MASK_FOLDER_DIRS: tuple[str, str] = ("images", "masks")
"""Images and masks folders of a mask-folder."""
LABELMAP_NAME = "labelmap.txt"
"""CVAT's class list in a VOC export."""
VOID_VALUE = 255
"""VOC's "void / ignore" value in index masks, read as background."""
_MASK_MODES = ("L", "P", "1", "I;16", "I;16L", "I;16B", "I")
_KIND_HELP = (
    f"kaggle-csv needs a .csv file, or a folder with {DEFAULT_ANNOTATIONS} (annotations=) and "
    f"{' or '.join(d + '/' for d in KAGGLE_IMAGE_DIRS)}; voc needs {VOC_DIRS[0]}/ and {VOC_DIRS[1]}/; "
    f"mask-folder needs {MASK_FOLDER_DIRS[0]}/ and {MASK_FOLDER_DIRS[1]}/"
)
_ClassesArg = ClassSet | str | Path | None


class DataSourceError(ValueError):
    """Labelled data that cannot be read as asked; the message names the file and what is allowed."""


@dataclass(frozen=True)
class LabelledSet:
    """Images and their per-class RLE masks, from any ``DATA_KINDS`` source.

    Attributes:
        kind: one of ``DATA_KINDS``.
        root: the folder (or CSV file) given.
        images_dir: image files are ``images_dir / image_id``.
        annotations: ``class_ids`` = ``classes.ids``; image ids are file names in ``images_dir``; every
            image's ``(H, W)`` is recorded.
        classes: the class set.
        splits: split name -> image ids (VOC ``ImageSets/Segmentation/<name>.txt``); empty otherwise.
        mask_encoding: ``"index"`` or ``"bits"`` for mask PNGs; None for kaggle-csv.
    """

    kind: str
    root: Path
    images_dir: Path
    annotations: Annotations
    classes: ClassSet
    splits: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    mask_encoding: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in DATA_KINDS:
            raise DataSourceError(f"unknown data kind {self.kind!r}; allowed: {', '.join(DATA_KINDS)}")
        if self.mask_encoding not in (None, "index", "bits"):
            raise DataSourceError(f"mask_encoding {self.mask_encoding!r} is not one of None, 'index', 'bits'")
        if self.annotations.class_ids != self.classes.ids:
            raise DataSourceError(
                f"annotations have class ids {list(self.annotations.class_ids)}, classes {list(self.classes.ids)}"
            )
        object.__setattr__(self, "splits", MappingProxyType({k: tuple(v) for k, v in self.splits.items()}))

    @property
    def image_ids(self) -> tuple[str, ...]:
        """Image file names, in order."""
        return self.annotations.image_ids

    def __len__(self) -> int:
        return len(self.annotations)

    def split(self, name: str) -> LabelledSet:
        """The images of split ``name`` only (``splits`` then holds just that split)."""
        if name not in self.splits:
            available = ", ".join(sorted(self.splits)) or "none (only VOC folders have ImageSets/Segmentation/*.txt)"
            raise DataSourceError(f"{self.root}: no split {name!r}; available splits: {available}")
        ids = self.splits[name]
        if not ids:
            raise DataSourceError(f"{self.root}: split {name!r} is empty")
        return replace(self, annotations=self.annotations.subset(ids), splits={name: ids})


def detect_kind(path: str | Path, *, annotations: str | None = None) -> str:
    """Which of ``DATA_KINDS`` ``path`` holds (``annotations`` names a CSV in the folder: kaggle-csv).

    Raises:
        DataSourceError: nothing matches; the message lists what each kind needs.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "kaggle-csv"
        raise DataSourceError(f"{path}: a file but not a .csv; {_KIND_HELP}")
    if not path.is_dir():
        raise DataSourceError(f"labelled data not found: {path}; {_KIND_HELP}")
    if annotations is not None:
        if not (path / annotations).is_file():
            raise DataSourceError(f"annotations file not found: {path / annotations}")
        return "kaggle-csv"
    for kind, dirs in (("voc", VOC_DIRS), ("mask-folder", MASK_FOLDER_DIRS)):
        if all((path / d).is_dir() for d in dirs):
            if (path / DEFAULT_ANNOTATIONS).is_file():
                logger.info(
                    "%s: reading it as %s; pass annotations=%r to read the CSV", path, kind, DEFAULT_ANNOTATIONS
                )
            return kind
    if (path / DEFAULT_ANNOTATIONS).is_file():
        return "kaggle-csv"
    raise DataSourceError(f"{path}: cannot tell what kind of labelled data this is; {_KIND_HELP}")


def open_labelled(
    path: str | Path,
    *,
    classes: ClassSet | str | Path | None = None,
    annotations: str | None = None,
    images: str | None = None,
    split: str | None = None,
    mask_encoding: str = "auto",
    require_masks: bool = True,
) -> LabelledSet:
    """Open labelled data of any ``DATA_KINDS`` (see the module docstring for detection, classes and encodings).

    Args:
        path: the data folder, or a Kaggle CSV file.
        classes: a ``ClassSet``, a class file, or comma-separated names (ids 1, 2, ...).
        annotations: kaggle-csv only: the CSV's name in the folder (default ``train.csv``).
        images: kaggle-csv only: the images folder, relative to the CSV's folder.
        split: keep only this split (voc).
        mask_encoding: one of ``MASK_ENCODINGS``; not for kaggle-csv.
        require_masks: when False, images without a mask PNG are left out instead of being an error.

    Raises:
        DataSourceError: anything that cannot be read as asked, naming the file.
    """
    if mask_encoding not in MASK_ENCODINGS:
        raise DataSourceError(f"mask_encoding {mask_encoding!r} is not one of {', '.join(MASK_ENCODINGS)}")
    root = Path(path)
    kind = detect_kind(root, annotations=annotations)
    if kind == "kaggle-csv":
        if mask_encoding != "auto":
            raise DataSourceError(
                f"{root}: mask_encoding={mask_encoding!r} applies to mask PNGs; a Kaggle CSV has none"
            )
        labelled = _open_kaggle(root, classes, annotations, images)
    else:
        if images is not None:
            raise DataSourceError(f"{root}: images= applies to kaggle-csv; a {kind} folder keeps its images in place")
        labelled = _open_masks(root, kind, classes, mask_encoding, require_masks)
    if split is not None:
        labelled = labelled.split(split)
    logger.info(
        "%s: %s, %d images, classes %s, splits %s",
        root,
        kind,
        len(labelled),
        dict(zip(labelled.classes.ids, labelled.classes.names, strict=True)),
        {k: len(v) for k, v in labelled.splits.items()},
    )
    return labelled


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


def write_mask_folder(
    out_dir: str | Path,
    images_dir: str | Path,
    annotations: Annotations,
    classes: ClassSet,
    encoding: str = "bits",
) -> Path:
    """Write a mask-folder: ``images/`` (copies), ``masks/<stem>.png`` (palette PNGs) and ``classes.yaml``.

    Args:
        out_dir: the new folder; its ``images/``, ``masks/`` and ``classes.yaml`` must not exist yet.
        images_dir: where ``annotations``' images are.
        annotations: the masks, with ``class_ids`` = ``classes.ids``.
        classes: the class set (written to ``classes.yaml`` with ``mask_encoding``).
        encoding: ``"bits"`` (overlaps survive) or ``"index"`` (overlapping classes are an error).

    Returns:
        ``out_dir``.
    """
    if encoding not in ("index", "bits"):
        raise DataSourceError(f"encoding {encoding!r} is not one of 'index', 'bits'")
    if tuple(annotations.class_ids) != classes.ids:
        raise DataSourceError(f"annotations have class ids {list(annotations.class_ids)}, classes {list(classes.ids)}")
    out_dir, images_dir = Path(out_dir), Path(images_dir)
    images_out, masks_out, class_file = out_dir / "images", out_dir / "masks", out_dir / CLASS_FILE_NAMES[0]
    for existing in (images_out, masks_out, class_file):
        if existing.exists():
            raise DataSourceError(f"{existing} already exists; write_mask_folder needs a fresh folder")
    _stem_map(annotations.image_ids, images_dir)  # refuses two images with one stem
    masks_out.mkdir(parents=True)
    images_out.mkdir()
    for image_id in annotations.image_ids:
        src = images_dir / image_id
        shape = _image_size(src)
        recorded = annotations.shapes.get(image_id)
        if recorded is not None and tuple(recorded) != shape:
            raise DataSourceError(f"{src}: image is {_wxh(shape)} but the annotations record {_wxh(recorded)}")
        try:
            masks = annotations.masks(image_id, shape)
        except RLEError as exc:
            raise DataSourceError(f"{image_id}: RLE does not fit the {_wxh(shape)} image: {exc}") from exc
        _write_mask(masks_out / f"{Path(image_id).stem}.png", masks, classes, encoding, image_id)
        shutil.copy2(src, images_out / image_id)
    class_file.write_text(yaml.safe_dump({**classes.to_dict(), "mask_encoding": encoding}, sort_keys=False))
    logger.info("wrote %d images and %s masks to %s", len(annotations), encoding, out_dir)
    return out_dir


# --- kaggle-csv -----------------------------------------------------------------------------------------------


def _open_kaggle(root: Path, classes: _ClassesArg, annotations: str | None, images: str | None) -> LabelledSet:
    csv_path = root if root.is_file() else root / (annotations or DEFAULT_ANNOTATIONS)
    if root.is_file() and annotations is not None:
        raise DataSourceError(f"{root}: annotations= names a CSV inside a folder; pass the folder or the CSV, not both")
    base = csv_path.parent
    if images is not None:
        images_dir = base / images
        if not images_dir.is_dir():
            raise DataSourceError(f"{csv_path}: images folder not found: {images_dir}")
    else:
        candidates = [base / d for d in KAGGLE_IMAGE_DIRS]
        images_dir = next((d for d in candidates if d.is_dir()), None)
        if images_dir is None:
            raise DataSourceError(
                f"{csv_path}: no images folder next to it (looked for {', '.join(map(str, candidates))}); pass images="
            )
    class_set, _, _ = _resolve_classes(classes, base, "kaggle-csv")
    try:
        ann = read_annotations(csv_path, images_dir=images_dir, class_ids=class_set.ids)
    except (OSError, ValueError) as exc:
        raise DataSourceError(f"{exc} (images folder {images_dir}, classes {list(class_set.ids)})") from exc
    if not len(ann):
        raise DataSourceError(f"{csv_path}: empty data set: no images ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}")

    def size_and_check(image_id: str) -> tuple[int, int]:
        shape = _image_size(images_dir / image_id)
        for class_id, rle in zip(ann.class_ids, ann.rles[image_id], strict=True):
            if rle:
                try:
                    decode_runs(rle, n_pixels=shape[0] * shape[1])
                except RLEError as exc:
                    raise DataSourceError(
                        f"{csv_path}: {image_id} class {class_id}: RLE does not fit the {_wxh(shape)} image: {exc}"
                    ) from exc
        return shape

    shapes = {i: size_and_check(i) for i in ann.image_ids}
    return LabelledSet("kaggle-csv", root, images_dir, ann.with_shapes(shapes), class_set)


# --- voc and mask-folder --------------------------------------------------------------------------------------


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
            f"({len(missing)} of {len(all_ids)} images lack one); pass require_masks=False to leave them out"
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


# --- classes --------------------------------------------------------------------------------------------------


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


# --- pixels and files -----------------------------------------------------------------------------------------


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
