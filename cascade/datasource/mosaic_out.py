"""Where ``write_mosaics`` writes: a new Kaggle-CSV set, or one already in the folder to append to.

``open_out`` only looks; ``MosaicOut.begin`` creates the images folder, ``commit`` writes ``train.csv`` (the
existing rows copied byte for byte, the new ones added by ``SubmissionWriter``) to a temporary file beside it and
moves it into place in one step, and ``discard`` removes what ``begin`` and ``commit`` left after a failure.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cascade.classes import CLASS_FILE_NAMES, SEVERSTAL, ClassSet
from cascade.constants import IMAGE_SHAPE
from cascade.datasource.labelled import DEFAULT_ANNOTATIONS, KAGGLE_IMAGE_DIRS, DataSourceError
from cascade.datasource.reading import open_labelled
from cascade.formats import Layout, SubmissionWriter

__all__ = ["MosaicOut", "describe_classes", "open_out"]


@dataclass
class MosaicOut:
    """The set mosaics are written into.

    Attributes:
        root: the output folder.
        images_dir: where new images go.
        annotations_path: ``root/train.csv``.
        classes: the set's class set.
        size: ``(H, W)`` of the set's images (the most common one when appending), else Severstal's.
        layout: the CSV's layout (a new set: positive rows only, as ``cascade synth`` writes).
        taken: image ids of the set and file names in ``images_dir``.
        appending: the set exists.
    """

    root: Path
    images_dir: Path
    annotations_path: Path
    classes: ClassSet
    size: tuple[int, int]
    layout: Layout
    taken: frozenset[str]
    appending: bool
    _created: list[Path] = field(default_factory=list)

    @property
    def _temporary(self) -> Path:
        return self.annotations_path.with_name(f".{self.annotations_path.name}.{os.getpid()}.tmp")

    def clashes(self, names: Iterable[str]) -> list[str]:
        """The names the set already has (as images or rows)."""
        return sorted(set(names) & self.taken)

    def begin(self) -> None:
        """Create the folders a new set needs."""
        for folder in (self.root, self.images_dir):
            if not folder.is_dir():
                folder.mkdir(parents=True)
                self._created.append(folder)

    def commit(self, rows: Sequence[tuple[str, Sequence[str]]]) -> None:
        """Add ``(image_id, RLE per class)`` rows to the CSV, replacing it in one step (a new set: its class file)."""
        temporary = self._temporary
        if self.appending:
            shutil.copyfile(self.annotations_path, temporary)
            with temporary.open("rb+") as f:  # a last row without its newline is a row, not a torn line
                if f.seek(0, os.SEEK_END):
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        f.write(b"\n")
        with SubmissionWriter(temporary, self.layout, append=True, class_ids=self.classes.ids) as writer:
            for image_id, rles in rows:
                writer.write(image_id, rles)
        with temporary.open("rb") as f:
            os.fsync(f.fileno())
        if not self.appending and self.classes != SEVERSTAL:
            class_file = self.root / CLASS_FILE_NAMES[0]
            class_file.write_text(yaml.safe_dump(self.classes.to_dict(), sort_keys=False))
            self._created.append(class_file)
        os.replace(temporary, self.annotations_path)

    def discard(self) -> None:
        """Remove the temporary CSV, and what ``begin``/``commit`` created when it is empty (or a class file)."""
        self._temporary.unlink(missing_ok=True)
        for path in reversed(self._created):
            with suppress(OSError):  # a folder someone else has written into stays
                path.rmdir() if path.is_dir() else path.unlink()


def open_out(root: Path, target: ClassSet | None, append: bool) -> MosaicOut:
    """Look at ``root``: new or empty (a new set of ``target``, default Severstal's), or, with ``append``, a set.

    Raises:
        DataSourceError: ``root`` is a file, not empty without ``append``, holds no readable Kaggle-CSV set to
            append to, or its classes differ from ``target``.
    """
    if root.exists() and not root.is_dir():
        raise DataSourceError(f"{root} is a file; the output must be a folder")
    if not (root.is_dir() and any(root.iterdir())):
        classes = target or SEVERSTAL
        images_dir, annotations_path = root / KAGGLE_IMAGE_DIRS[0], root / DEFAULT_ANNOTATIONS
        return MosaicOut(root, images_dir, annotations_path, classes, IMAGE_SHAPE, Layout.LONG, frozenset(), False)
    if not append:
        raise DataSourceError(
            f"{root} is not empty; give a new folder, or --append to add to the Kaggle-CSV set in it "
            f"({DEFAULT_ANNOTATIONS} + {KAGGLE_IMAGE_DIRS[0]}/)"
        )
    try:
        existing = open_labelled(root, annotations=DEFAULT_ANNOTATIONS)
    except DataSourceError as exc:
        raise DataSourceError(f"--append needs a readable Kaggle-CSV set in {root}: {exc}") from exc
    if target is not None and target != existing.classes:
        raise DataSourceError(
            f"{root} holds classes {describe_classes(existing.classes)} (its class file, else Severstal's), "
            f"not the {describe_classes(target)} asked for; leave out --classes to append to it"
        )
    size = Counter(existing.annotations.shapes.values()).most_common(1)[0][0]
    taken = frozenset(existing.image_ids) | {p.name for p in existing.images_dir.iterdir()}
    return MosaicOut(
        root,
        existing.images_dir,
        root / DEFAULT_ANNOTATIONS,
        existing.classes,
        size,
        existing.annotations.layout,
        taken,
        True,
    )


def describe_classes(classes: ClassSet) -> str:
    """``"1=inclusion, 2=patches"``."""
    return ", ".join(f"{i}={n}" for i, n in zip(classes.ids, classes.names, strict=True))
