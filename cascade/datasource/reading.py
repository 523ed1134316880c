"""``open_labelled``: any kind of labelled data as a ``LabelledSet``; the kaggle-csv reader."""

from __future__ import annotations

import logging
from pathlib import Path

from cascade.classes import ClassSet
from cascade.datasource.class_files import _resolve_classes
from cascade.datasource.labelled import (
    DEFAULT_ANNOTATIONS,
    KAGGLE_IMAGE_DIRS,
    MASK_ENCODINGS,
    DataSourceError,
    LabelledSet,
    _ClassesArg,
    detect_kind,
)
from cascade.datasource.mask_folders import _open_masks
from cascade.datasource.mask_png import _image_size, _wxh
from cascade.formats import IMAGE_SUFFIXES, read_annotations
from cascade.rle import RLEError, decode_runs

__all__ = ["open_labelled"]

logger = logging.getLogger(__name__)


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
