"""What labelled data is: the kinds read, the error they raise, ``LabelledSet`` and ``detect_kind``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from cascade.classes import ClassSet
from cascade.formats import Annotations

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
