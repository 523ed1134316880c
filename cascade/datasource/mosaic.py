"""Mosaics: labelled images of another size and class set tiled into training images of the target profile.

``write_mosaics(source, out_dir, options)`` cuts nothing: it takes whole source images (e.g. NEU-Seg's 200x200
real hot-rolled steel), scales each to the target height, and lays ``tiles_per_image`` of them side by side
across the target width (Severstal's 256x1600 by default), cross-fading ``fade`` pixels at every seam. A tile's
mask is cut at the seam's midline. Source classes are mapped to target classes (``resolve_class_map``); a source
class left out of the map becomes background, so its tiles also teach "this is not any target class".

A *positive* mosaic holds 1 or 2 (``POSITIVE_TILES``) tiles with a mapped class, a *negative* one none; tiles
holding a mapped class are turned 90 degrees when their masks' long side does not run the ``orient`` way
(Severstal's scratches run top to bottom: ``vertical``), the other tiles at random. Tiles are drawn without
replacement until the source is used up, then again in a new order.

The set is written as a Kaggle CSV (``train_images/*.jpg`` + ``train.csv``, 3-channel JPEGs as ``cascade synth``
writes them); ``append=True`` adds to the set already in ``out_dir`` (e.g. a ``cascade synth`` set), keeping its
rows and images; ``train.csv`` is replaced atomically, and a failed run removes the images it wrote.
The same options and source give byte-identical files.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cascade.classes import ClassSet
from cascade.datasource.labelled import DataSourceError, LabelledSet
from cascade.datasource.mosaic_out import MosaicOut, describe_classes, open_out
from cascade.datasource.mosaic_tiles import (
    ORIENTATIONS,
    POSITIVE_TILES,
    compose,
    default_tiles,
    plan_mosaics,
    read_tile,
    seams,
)
from cascade.rle import encode_stack
from cascade.synth.config import SynthConfig
from cascade.synth.generator import encode_jpeg

__all__ = [
    "DEFAULT_FADE",
    "ORIENTATIONS",
    "POSITIVE_TILES",
    "MosaicOptions",
    "MosaicSet",
    "TilePlacement",
    "parse_size",
    "resolve_class_map",
    "write_mosaics",
]

logger = logging.getLogger(__name__)

DEFAULT_FADE = 24
"""Pixels of cross-fade at each seam between two tiles."""


@dataclass(frozen=True)
class MosaicOptions:
    """What ``write_mosaics`` makes.

    Attributes:
        class_map: ``"SOURCE=TARGET"`` pairs, each side a class name or id (``resolve_class_map``).
        n: number of mosaics.
        size: ``(H, W)`` of a mosaic; None: the size of the images already in ``out_dir`` when appending,
            else Severstal's 256x1600.
        positive_share: share of mosaics holding at least one mapped-class tile.
        tiles_per_image: tiles side by side; None: enough tiles of the source's size scaled to the target
            height to span the width.
        fade: cross-fade width in pixels at each seam (smaller than a tile's width).
        orient: one of ``ORIENTATIONS``.
        seed: the same seed (and source and options) gives byte-identical files; names carry it.
        jpeg_quality: JPEG quality of the written images, as ``cascade synth``'s default.
    """

    class_map: tuple[str, ...]
    n: int = 100
    size: tuple[int, int] | None = None
    positive_share: float = 0.5
    tiles_per_image: int | None = None
    fade: int = DEFAULT_FADE
    orient: str = "vertical"
    seed: int = 0
    jpeg_quality: int = SynthConfig.jpeg_quality

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_map", tuple(self.class_map))
        if not self.class_map:
            raise DataSourceError("give at least one class map SOURCE=TARGET (--map), e.g. scratches=scratches")
        if self.n < 1:
            raise DataSourceError(f"n must be >= 1, got {self.n}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise DataSourceError(f"size must be (height, width), both >= 1, got {self.size}")
        if not 0.0 <= self.positive_share <= 1.0:
            raise DataSourceError(f"positive_share must be within 0..1, got {self.positive_share}")
        if self.tiles_per_image is not None and self.tiles_per_image < 1:
            raise DataSourceError(f"tiles_per_image must be >= 1, got {self.tiles_per_image}")
        if self.fade < 0:
            raise DataSourceError(f"fade must be >= 0 pixels, got {self.fade}")
        if self.orient not in ORIENTATIONS:
            raise DataSourceError(f"orient {self.orient!r} is not one of {', '.join(ORIENTATIONS)}")
        if self.seed < 0:
            raise DataSourceError(f"seed must be >= 0, got {self.seed}")
        if not 1 <= self.jpeg_quality <= 100:
            raise DataSourceError(f"jpeg_quality must be within 1..100, got {self.jpeg_quality}")


@dataclass(frozen=True)
class TilePlacement:
    """One source image in a mosaic.

    Attributes:
        source_id: the source image's id.
        span: columns ``[x0, x1)`` its resized pixels cover, cross-fades included.
        columns: columns ``[x0, x1)`` whose mask it gives (cut at the seams' midlines).
        rotated: turned 90 degrees (counter-clockwise) before resizing.
        positive: it holds a mapped class.
    """

    source_id: str
    span: tuple[int, int]
    columns: tuple[int, int]
    rotated: bool
    positive: bool


@dataclass(frozen=True)
class MosaicSet:
    """What ``write_mosaics`` wrote.

    Attributes:
        root: the output folder.
        images_dir: where the mosaics are (``root/train_images``, or the images folder of the set appended to).
        annotations_path: the Kaggle CSV (``root/train.csv``).
        image_ids: the new mosaics' file names, in order.
        placements: per mosaic, its tiles left to right.
        size: ``(H, W)`` of every mosaic.
        classes: the target class set (the CSV's class ids).
        class_map: source class id -> target class id.
        tiles_per_class: source class name -> tiles used that hold it.
    """

    root: Path
    images_dir: Path
    annotations_path: Path
    image_ids: tuple[str, ...]
    placements: tuple[tuple[TilePlacement, ...], ...]
    size: tuple[int, int]
    classes: ClassSet
    class_map: Mapping[int, int]
    tiles_per_class: Mapping[str, int]

    @property
    def tiles_per_image(self) -> int:
        """Tiles side by side in each mosaic."""
        return len(self.placements[0]) if self.placements else 0

    @property
    def positives(self) -> int:
        """Mosaics holding at least one mapped-class tile."""
        return sum(any(t.positive for t in tiles) for tiles in self.placements)


def parse_size(text: str) -> tuple[int, int]:
    """``"256x1600"`` (height x width, in pixels) -> ``(256, 1600)``.

    Raises:
        DataSourceError: not two positive integers joined by ``x``.
    """
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or min(int(match.group(1)), int(match.group(2))) < 1:
        raise DataSourceError(f"size {text!r} is not HEIGHTxWIDTH in pixels, e.g. 256x1600")
    return int(match.group(1)), int(match.group(2))


def resolve_class_map(specs: Sequence[str], source: ClassSet, target: ClassSet) -> dict[int, int]:
    """``"SOURCE=TARGET"`` pairs (names or ids) -> ``{source id: target id}``; several sources may share a target.

    Raises:
        DataSourceError: a pair without ``=``, a name or id the class set lacks (the valid ones listed), or a
            source class mapped twice.
    """
    mapping: dict[int, int] = {}
    for spec in specs:
        left, sep, right = spec.partition("=")
        if not sep or not left.strip() or not right.strip():
            raise DataSourceError(f"class map {spec!r} is not SOURCE=TARGET (a class name or id on each side)")
        source_id, target_id = _class_id(left, source, "source"), _class_id(right, target, "target")
        if source_id in mapping:
            raise DataSourceError(f"class map {spec!r}: source class {left.strip()!r} is mapped twice")
        mapping[source_id] = target_id
    return mapping


def _class_id(text: str, classes: ClassSet, side: str) -> int:
    text = text.strip()
    if text.isdigit() and int(text) in classes.ids:
        return int(text)
    if text in classes.names:
        return classes.ids[classes.names.index(text)]
    raise DataSourceError(
        f"{side} class {text!r} is neither a name nor an id of the {side} classes ({describe_classes(classes)})"
    )


def write_mosaics(
    source: LabelledSet,
    out_dir: str | Path,
    options: MosaicOptions,
    *,
    target: ClassSet | None = None,
    append: bool = False,
    progress: bool = False,
) -> MosaicSet:
    """Write ``options.n`` mosaics of ``source``'s images as a Kaggle-CSV set in ``out_dir``.

    Args:
        source: the labelled images to tile (``open_labelled``, e.g. with ``split="train"``).
        out_dir: a new or empty folder; with ``append``, the folder of a Kaggle-CSV set to add to.
        options: what to make.
        target: the target class set; default: the set's own when appending, else Severstal's.
        append: add to the set in ``out_dir`` instead of refusing a non-empty folder.
        progress: show a progress bar.

    Raises:
        DataSourceError: bad options or map, a non-empty ``out_dir`` without ``append``, names already in
            the set, a source without the tiles asked for, an unreadable image; nothing is left half-written.
    """
    out = open_out(Path(out_dir), target, append)
    class_map = resolve_class_map(options.class_map, source.classes, out.classes)
    size = options.size or out.size
    if out.size != size and append:
        logger.warning("%s holds %dx%d images; the mosaics will be %dx%d (HxW)", out.root, *out.size, *size)
    n_tiles = options.tiles_per_image or default_tiles(source, size)
    seams(size[1], n_tiles, options.fade)
    plan = plan_mosaics(source, class_map, options.n, options.positive_share, n_tiles, options.seed)
    digits = max(5, len(str(options.n - 1)))
    names = tuple(f"mosaic-{options.seed}-{i:0{digits}d}.jpg" for i in range(options.n))
    lookup = np.array([out.classes.ids.index(class_map[c]) if c in class_map else -1 for c in source.classes.ids])
    placements = []

    def render(index: int) -> tuple[str, list[str]]:
        built = [read_tile(source, p, lookup, len(out.classes), options.orient) for p in plan[index]]
        image, masks, where = compose([(g, m) for g, m, _ in built], size, options.fade)
        (out.images_dir / names[index]).write_bytes(encode_jpeg(image, options.jpeg_quality))
        placements.append(
            tuple(
                TilePlacement(source.image_ids[p.source_index], span, columns, turned, p.positive)
                for p, (_, _, turned), (span, columns) in zip(plan[index], built, where, strict=True)
            )
        )
        return names[index], encode_stack(masks)

    _write(out, names, render, progress)
    labels = source.annotations.labels()
    counts = Counter(
        source.classes.names[k] for tiles in plan for p in tiles for k in np.flatnonzero(labels[p.source_index])
    )
    logger.info("wrote %d mosaics (%dx%d, %d tiles each) to %s", options.n, *size, n_tiles, out.images_dir)
    return MosaicSet(
        root=out.root,
        images_dir=out.images_dir,
        annotations_path=out.annotations_path,
        image_ids=names,
        placements=tuple(placements),
        size=size,
        classes=out.classes,
        class_map=class_map,
        tiles_per_class={name: counts.get(name, 0) for name in source.classes.names},
    )


def _write(
    out: MosaicOut, names: Sequence[str], render: Callable[[int], tuple[str, list[str]]], progress: bool
) -> None:
    """Render every mosaic into ``out`` and its rows into the CSV; on failure, remove what this run wrote."""
    clashes = out.clashes(names)
    if clashes:
        raise DataSourceError(
            f"{out.root} already holds {len(clashes)} of these names, e.g. {clashes[0]}; "
            "give another --seed or a new folder"
        )
    indices = range(len(names))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="mosaic", unit="img")
    written: list[Path] = []
    try:
        out.begin()
        rows = []
        for index in indices:
            written.append(out.images_dir / names[index])
            rows.append(render(index))
        out.commit(rows)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        out.discard()
        raise
