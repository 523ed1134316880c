"""``write_mask_folder``: annotations written out as a mask-folder (images, palette mask PNGs, ``classes.yaml``)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import yaml

from cascade.classes import CLASS_FILE_NAMES, ClassSet
from cascade.datasource.labelled import DataSourceError
from cascade.datasource.mask_folders import _stem_map
from cascade.datasource.mask_png import _image_size, _write_mask, _wxh
from cascade.formats import Annotations
from cascade.rle import RLEError

__all__ = ["write_mask_folder"]

logger = logging.getLogger(__name__)


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
