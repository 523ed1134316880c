"""Real defect outlines: polygon layouts taken once from real Severstal masks (outlines only, no pixels).

A *layout* is every region of one class in one real train image, each region simplified to a polygon
(``cv2.approxPolyDP``, 1.5 px): real labels are loose polygons, mostly with few corners. The package ships a
few hundred layouts per class in ``cascade/data/synth-shapes.npz`` (~100 KB); ``draw_layout`` picks one,
flips it, stretches it a little across the sheet, slides it along the sheet and fills it as a mask, so the
synthetic masks have the real shapes, sizes, counts and full-height runs, and touch the sheet's edges as
real ones do.

The table is built by ``python -m cascade.synth.shapes ../shared/severstal-real`` from ``rle-pool.csv`` and
``annotations-1000.csv``, leaving out the images of ``images.csv`` (the real evaluation images).
"""

from __future__ import annotations

import argparse
import csv
import functools
import itertools
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cascade.constants import CLASS_IDS, IMAGE_SHAPE

__all__ = ["SHAPES_FILE", "ShapeTable", "build_shape_table", "draw_layout", "shape_table"]

SHAPES_FILE = Path(__file__).resolve().parents[1] / "data" / "synth-shapes.npz"
"""The packaged layout table."""

_EPSILON = 1.5  # polygon simplification, pixels
_EDGE_SNAP = 0.35  # share of layouts slid against the sheet's edge when the image shows one


@dataclass(frozen=True)
class ShapeTable:
    """Polygon layouts of real defects, flattened into arrays.

    Attributes:
        class_ids: ``(L,)`` class id of each layout.
        layout_start: ``(L + 1,)`` first polygon of each layout (and one past the last).
        poly_start: ``(P + 1,)`` first point of each polygon (and one past the last).
        points: ``(V, 2)`` int16 ``(x, y)`` vertices in 1600x256 image coordinates.
    """

    class_ids: np.ndarray
    layout_start: np.ndarray
    poly_start: np.ndarray
    points: np.ndarray

    def layouts_of(self, class_id: int) -> np.ndarray:
        """Indices of the layouts of ``class_id``."""
        return np.flatnonzero(self.class_ids == class_id)

    def polygons(self, layout: int) -> list[np.ndarray]:
        """The polygons of one layout, each ``(n, 2)`` int32 ``(x, y)``."""
        first, last = int(self.layout_start[layout]), int(self.layout_start[layout + 1])
        starts = self.poly_start[first : last + 1]
        return [self.points[a:b].astype(np.int32) for a, b in itertools.pairwise(starts)]

    def save(self, path: str | Path) -> None:
        """Write the table as a compressed ``.npz``."""
        np.savez_compressed(
            path, class_ids=self.class_ids, layout_start=self.layout_start, poly_start=self.poly_start,
            points=self.points,
        )  # fmt: skip


@functools.cache
def shape_table(path: str | None = None) -> ShapeTable:
    """The layout table (default: the packaged ``SHAPES_FILE``), loaded once per process."""
    file = Path(path) if path is not None else SHAPES_FILE
    if not file.is_file():
        raise FileNotFoundError(f"synthetic shape table {file} not found (python -m cascade.synth.shapes builds it)")
    with np.load(file) as data:
        return ShapeTable(**{key: data[key] for key in ("class_ids", "layout_start", "poly_start", "points")})


def draw_layout(
    rng: np.random.Generator,
    class_id: int,
    columns: tuple[int, int],
    has_band: bool,
    table: ShapeTable | None = None,
    shape: tuple[int, int] = IMAGE_SHAPE,
) -> np.ndarray:
    """Fill one randomly chosen, randomly placed real layout of ``class_id`` as a mask.

    Args:
        rng: per-image random generator.
        class_id: 1..4.
        columns: ``[lo, hi)`` sheet columns; the mask never leaves them.
        has_band: the image shows the sheet's edge (then some layouts are slid against it).
        table: the layouts (default ``shape_table()``).
        shape: ``(H, W)`` of the image.

    Returns:
        ``(H, W)`` bool mask (may be empty when the sheet is very narrow).
    """
    if class_id not in CLASS_IDS:
        raise ValueError(f"unknown class id {class_id!r}; allowed: {CLASS_IDS}")
    table = table or shape_table()
    height = shape[0]
    candidates = table.layouts_of(class_id)
    polygons = [p.astype(np.float32) for p in table.polygons(int(rng.choice(candidates)))]
    pts = np.concatenate(polygons)
    x_min, x_max = float(pts[:, 0].min()), float(pts[:, 0].max())
    centre = 0.5 * (x_min + x_max)
    stretch = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    flip_x, flip_y = rng.random() < 0.5, rng.random() < 0.5
    lo, hi = columns
    span = (x_max - x_min) * stretch
    if span >= hi - lo:
        left = rng.uniform(hi - span, lo)
    elif has_band and rng.random() < _EDGE_SNAP:
        near_band = rng.random() < 0.8  # mostly the edge next to the band, sometimes the image's other edge
        at_left = near_band if lo > 0 else not near_band
        left = lo if at_left else hi - 1 - span
    else:  # anywhere in the slack; none left when the layout is within one column of the sheet's width
        left = rng.uniform(lo, max(lo, hi - 1 - span))
    mask = np.zeros(shape, dtype=np.uint8)
    outlines = []
    for poly in polygons:
        x = (poly[:, 0] - centre) * stretch
        x = -x if flip_x else x
        y = (height - 1) - poly[:, 1] if flip_y else poly[:, 1]
        outlines.append(np.stack([np.rint(x + left + span / 2), y], axis=1).astype(np.int32))
    cv2.fillPoly(mask, outlines, 1)
    mask[:, :lo] = 0
    mask[:, hi:] = 0
    return mask.view(bool)


def _simplified(mask: np.ndarray) -> list[np.ndarray]:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = [cv2.approxPolyDP(c, _EPSILON, True)[:, 0, :] for c in contours]
    return [p for p in polys if len(p) >= 3]


def build_shape_table(
    rows: Iterable[tuple[str, int, str]], per_class: int = 300, seed: int = 0, exclude: Iterable[str] = ()
) -> ShapeTable:
    """Simplify real masks into a layout table.

    Args:
        rows: ``(image_id, class_id, rle)`` of real masks (Kaggle encoding, 1600x256).
        per_class: at most this many layouts per class (a seeded random choice).
        seed: seed of that choice.
        exclude: image ids to leave out (the evaluation images).
    """
    from cascade.rle import decode

    skip = set(exclude)
    by_class: dict[int, dict[str, str]] = {c: {} for c in CLASS_IDS}
    for image_id, class_id, rle in rows:
        if rle and image_id not in skip and class_id in by_class:
            by_class[class_id].setdefault(image_id, rle)
    rng = np.random.default_rng(seed)
    class_ids, layout_start, poly_start, points = [], [0], [0], []
    for class_id in CLASS_IDS:
        ids = sorted(by_class[class_id])
        for image_id in rng.permutation(ids)[:per_class]:
            mask = np.ascontiguousarray(decode(by_class[class_id][image_id], IMAGE_SHAPE), dtype=np.uint8)
            polys = _simplified(mask)
            if not polys:
                continue
            for poly in polys:
                points.append(poly.astype(np.int16))
                poly_start.append(poly_start[-1] + len(poly))
            class_ids.append(class_id)
            layout_start.append(layout_start[-1] + len(polys))
    return ShapeTable(
        class_ids=np.asarray(class_ids, dtype=np.uint8),
        layout_start=np.asarray(layout_start, dtype=np.int32),
        poly_start=np.asarray(poly_start, dtype=np.int32),
        points=np.concatenate(points).astype(np.int16),
    )


def _read_rows(path: Path) -> list[tuple[str, int, str]]:
    with path.open(newline="") as fh:
        return [(r["ImageId"], int(r["ClassId"]), r["EncodedPixels"]) for r in csv.DictReader(fh)]


def main(argv: list[str] | None = None) -> int:
    """Build ``SHAPES_FILE`` from a real slice folder (``rle-pool.csv``, ``annotations-1000.csv``, ``images.csv``)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("real_dir", type=Path, help="e.g. ../shared/severstal-real")
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--out", type=Path, default=SHAPES_FILE)
    args = parser.parse_args(argv)
    rows = _read_rows(args.real_dir / "rle-pool.csv") + _read_rows(args.real_dir / "annotations-1000.csv")
    with (args.real_dir / "images.csv").open(newline="") as fh:
        exclude = [r["ImageId"] for r in csv.DictReader(fh)]
    table = build_shape_table(rows, args.per_class, exclude=exclude)
    table.save(args.out)
    counts = {c: int((table.class_ids == c).sum()) for c in CLASS_IDS}
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} KB): layouts per class {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
