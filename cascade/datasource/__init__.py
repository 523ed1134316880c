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

``write_mosaics`` (``cascade mosaic``) tiles any such set into training images of another size and class set
(e.g. NEU-Seg's 200x200 tiles into Severstal's 256x1600), written as a Kaggle-CSV set or appended to one.
"""

from __future__ import annotations

from cascade.datasource.labelled import (
    DATA_KINDS,
    DEFAULT_ANNOTATIONS,
    KAGGLE_IMAGE_DIRS,
    LABELMAP_NAME,
    MASK_ENCODINGS,
    MASK_FOLDER_DIRS,
    VOC_DIRS,
    VOID_VALUE,
    DataSourceError,
    LabelledSet,
    detect_kind,
)
from cascade.datasource.mask_png import read_mask_png
from cascade.datasource.mosaic import (
    DEFAULT_FADE,
    ORIENTATIONS,
    MosaicOptions,
    MosaicSet,
    TilePlacement,
    parse_size,
    resolve_class_map,
    write_mosaics,
)
from cascade.datasource.reading import open_labelled
from cascade.datasource.writer import write_mask_folder

__all__ = [
    "DATA_KINDS",
    "DEFAULT_ANNOTATIONS",
    "DEFAULT_FADE",
    "KAGGLE_IMAGE_DIRS",
    "LABELMAP_NAME",
    "MASK_ENCODINGS",
    "MASK_FOLDER_DIRS",
    "ORIENTATIONS",
    "VOC_DIRS",
    "VOID_VALUE",
    "DataSourceError",
    "LabelledSet",
    "MosaicOptions",
    "MosaicSet",
    "TilePlacement",
    "detect_kind",
    "open_labelled",
    "parse_size",
    "read_mask_png",
    "resolve_class_map",
    "write_mask_folder",
    "write_mosaics",
]
