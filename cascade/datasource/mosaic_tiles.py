"""Laying out mosaics: which source images go where (``plan_mosaics``), each tile read with its classes mapped and
turned (``read_tile``), and tiles cross-faded side by side into one image (``compose``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import cv2
import numpy as np

from cascade.datasource.labelled import DataSourceError, LabelledSet
from cascade.imageio import ImageDecodeError, read_image

__all__ = [
    "ORIENTATIONS",
    "POSITIVE_TILES",
    "PlannedTile",
    "compose",
    "default_tiles",
    "plan_mosaics",
    "read_tile",
    "seams",
]

ORIENTATIONS: tuple[str, ...] = ("vertical", "horizontal", "none")
"""Which way tiles holding a mapped class are turned so that their masks' long side runs; none: as stored."""
POSITIVE_TILES: tuple[int, ...] = (1, 1, 2)
"""A positive mosaic holds one of these numbers of mapped-class tiles, drawn at random."""


@dataclass(frozen=True)
class PlannedTile:
    """One tile of a mosaic as planned.

    Attributes:
        source_index: index of the source image in ``LabelledSet.image_ids``.
        positive: it holds a mapped class.
        turn: a tile without mapped classes turned 90 degrees at random (tiles with them turn by ``orient``).
    """

    source_index: int
    positive: bool
    turn: bool


class _Pool:
    """Source images drawn without replacement, refilled in a new order once used up."""

    def __init__(self, indices: np.ndarray, rng: np.random.Generator, empty_message: str) -> None:
        self.indices, self.rng, self.empty_message = indices, rng, empty_message
        self.queue: list[int] = []

    def draw(self) -> int:
        if not len(self.indices):
            raise DataSourceError(self.empty_message)
        if not self.queue:
            self.queue = [int(i) for i in self.rng.permutation(self.indices)]
        return self.queue.pop()


def plan_mosaics(
    source: LabelledSet, class_map: Mapping[int, int], n: int, positive_share: float, n_tiles: int, seed: int
) -> list[list[PlannedTile]]:
    """The tiles of ``n`` mosaics, left to right.

    ``round(n * positive_share)`` mosaics, at random places, hold ``POSITIVE_TILES`` tiles with a class of
    ``class_map`` (source id -> target id) and fill the other places with tiles without; the rest hold none.

    Raises:
        DataSourceError: no source image with a mapped class for a positive mosaic, or none without for the rest.
    """
    rng = np.random.default_rng(seed)
    labels = source.annotations.labels()
    mapped = [source.classes.index(c) for c in class_map]
    holds = labels[:, mapped].any(axis=1)
    names = ", ".join(source.classes.name(c) for c in class_map)
    positives = _Pool(
        np.flatnonzero(holds),
        rng,
        f"{source.root}: no image holds a mapped class ({names}); check --map, or set --positive-share 0",
    )
    negatives = _Pool(
        np.flatnonzero(~holds),
        rng,
        f"{source.root}: every image holds a mapped class ({names}), so none is left to fill mosaics with",
    )
    is_positive = np.zeros(n, dtype=bool)
    is_positive[rng.permutation(n)[: round(n * positive_share)]] = True
    plan = []
    for positive in is_positive:
        k = min(int(rng.choice(POSITIVE_TILES)), n_tiles) if positive else 0
        tiles = [PlannedTile(positives.draw(), True, False) for _ in range(k)]
        tiles += [PlannedTile(negatives.draw(), False, bool(rng.random() < 0.5)) for _ in range(n_tiles - k)]
        plan.append([tiles[i] for i in rng.permutation(len(tiles))])
    return plan


def default_tiles(source: LabelledSet, size: tuple[int, int]) -> int:
    """Tiles of the source's median aspect, scaled to the target height, needed to span the target width."""
    aspects = [w / h for h, w in (source.annotations.shape_of(i) for i in source.image_ids)]
    tile_width = size[0] * float(np.median(aspects))
    return max(1, math.ceil(size[1] / tile_width - 1e-9))


def seams(width: int, n_tiles: int, fade: int) -> list[int]:
    """Tile boundaries ``0 = b0 < b1 < ... < bn = width``; every tile wider than ``fade``."""
    bounds = [round(k * width / n_tiles) for k in range(n_tiles + 1)]
    narrowest = min(b - a for a, b in pairwise(bounds))
    if narrowest <= fade:
        raise DataSourceError(
            f"{n_tiles} tiles across {width} px are {narrowest} px wide, not wider than the {fade} px fade; "
            "lower --fade or --tiles-per-image"
        )
    return bounds


def read_tile(
    source: LabelledSet, planned: PlannedTile, lookup: np.ndarray, n_target: int, orient: str
) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(gray (h, w) float32, target masks (C, h, w) bool, rotated)`` of one planned tile.

    ``lookup[k]`` is the target array index of source class index ``k``, or -1 (background).
    """
    image_id = source.image_ids[planned.source_index]
    path = source.images_dir / image_id
    try:
        gray = cv2.cvtColor(read_image(path), cv2.COLOR_RGB2GRAY).astype(np.float32)
    except ImageDecodeError as exc:
        raise DataSourceError(str(exc)) from exc
    src_masks = source.annotations.masks(image_id)
    masks = np.zeros((n_target, *gray.shape), dtype=bool)
    for k, t in enumerate(lookup):
        if t >= 0:
            masks[t] |= src_masks[k]
    turn = planned.turn
    ys, xs = np.nonzero(masks.any(axis=0))
    if planned.positive and orient != "none" and ys.size:
        tall, wide = int(np.ptp(ys)), int(np.ptp(xs))  # extent of the mapped classes' pixels
        turn = wide > tall if orient == "vertical" else tall > wide
    if turn:
        gray, masks = np.ascontiguousarray(np.rot90(gray)), np.rot90(masks, axes=(1, 2))
    return gray, masks, turn


def _nearest(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(C, h, w)`` bool resized to ``(C, height, width)`` by nearest neighbour (pixel centres)."""
    rows = ((np.arange(height) + 0.5) * masks.shape[1] / height).astype(np.intp)
    cols = ((np.arange(width) + 0.5) * masks.shape[2] / width).astype(np.intp)
    return masks[:, rows][:, :, cols]


def compose(
    tiles: Sequence[tuple[np.ndarray, np.ndarray]], size: tuple[int, int], fade: int
) -> tuple[np.ndarray, np.ndarray, list[tuple[tuple[int, int], tuple[int, int]]]]:
    """Cross-fade ``(gray, masks)`` tiles left to right into ``(H, W)`` uint8 and ``(C, H, W)`` bool.

    Returns:
        The image, the masks and each tile's ``(span, columns)``.
    """
    height, width = size
    bounds = seams(width, len(tiles), fade)
    left, right = fade // 2, fade - fade // 2
    ramp = (np.arange(fade, dtype=np.float32) + 0.5) / max(fade, 1)
    image = np.zeros(size, dtype=np.float32)
    masks = np.zeros((tiles[0][1].shape[0], *size), dtype=bool)
    where = []
    for i, (gray, tile_masks) in enumerate(tiles):
        first, last = i == 0, i == len(tiles) - 1
        x0, x1 = bounds[i] - (0 if first else left), bounds[i + 1] + (0 if last else right)
        pixels = cv2.resize(gray, (x1 - x0, height), interpolation=cv2.INTER_LINEAR)
        weight = np.ones(x1 - x0, dtype=np.float32)
        if not first and fade:
            weight[:fade] = ramp
        if not last and fade:
            weight[-fade:] = 1.0 - ramp
        image[:, x0:x1] += pixels * weight
        masks[:, :, bounds[i] : bounds[i + 1]] = _nearest(tile_masks, height, x1 - x0)[
            :, :, bounds[i] - x0 : bounds[i + 1] - x0
        ]
        where.append(((x0, x1), (bounds[i], bounds[i + 1])))
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), masks, where
