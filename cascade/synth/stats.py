"""Statistics of a Severstal-style train set (class shares, multi-label shares, defect areas), side by side.

``synth_stats`` measures a generated set; ``real_stats`` gives the real train set's numbers, from
``train-index.csv`` when the real slice is at hand, else from the summary constants in ``reference.py``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cascade.constants import CLASS_IDS, NUM_CLASSES
from cascade.formats import read_annotations
from cascade.rle import rle_area
from cascade.synth.reference import (
    AREA_PERCENTILES,
    REAL_AREA_KNOTS,
    REAL_AREA_MEAN,
    REAL_COMBINATION_COUNTS,
    REAL_NUM_IMAGES,
)

__all__ = [
    "STATS_PERCENTILES",
    "DatasetStats",
    "default_real_index",
    "format_stats",
    "real_stats",
    "reference_stats",
    "stats_from_areas",
    "synth_stats",
]

STATS_PERCENTILES: tuple[int, ...] = (5, 25, 50, 75, 95)
"""Percentiles of the per-class defect area that the statistics report."""


@dataclass(frozen=True)
class DatasetStats:
    """Summary of a train set.

    Attributes:
        source: where the numbers come from.
        num_images: images in the set.
        clean_share: share of images without any defect.
        positives_per_image: mean number of classes present per image.
        multi_label_share: share of images with two or more classes.
        three_plus_share: share of images with three or more classes.
        class_share: per class, share of images that have it.
        area_quantiles: per class, defect area in pixels at ``STATS_PERCENTILES`` (NaN when absent).
        area_mean: per class, mean defect area over the images that have it (NaN when absent).
    """

    source: str
    num_images: int
    clean_share: float
    positives_per_image: float
    multi_label_share: float
    three_plus_share: float
    class_share: tuple[float, ...]
    area_quantiles: tuple[tuple[float, ...], ...]
    area_mean: tuple[float, ...]


def stats_from_areas(areas: np.ndarray, source: str) -> DatasetStats:
    """Statistics from per-image, per-class defect areas.

    Args:
        areas: ``(N, 4)`` pixel counts, 0 where a class is absent.
        source: description of the data.
    """
    areas = np.asarray(areas)
    if areas.ndim != 2 or areas.shape[1] != NUM_CLASSES or areas.shape[0] == 0:
        raise ValueError(f"areas must be (N, {NUM_CLASSES}) with N >= 1, got shape {areas.shape}")
    present = areas > 0
    per_image = present.sum(axis=1)
    quantiles, means = [], []
    for k in range(NUM_CLASSES):
        values = areas[present[:, k], k]
        if values.size:
            quantiles.append(tuple(float(q) for q in np.percentile(values, STATS_PERCENTILES)))
            means.append(float(values.mean()))
        else:
            quantiles.append(tuple(float("nan") for _ in STATS_PERCENTILES))
            means.append(float("nan"))
    return DatasetStats(
        source=source,
        num_images=int(areas.shape[0]),
        clean_share=float(np.mean(per_image == 0)),
        positives_per_image=float(per_image.mean()),
        multi_label_share=float(np.mean(per_image >= 2)),
        three_plus_share=float(np.mean(per_image >= 3)),
        class_share=tuple(float(s) for s in present.mean(axis=0)),
        area_quantiles=tuple(quantiles),
        area_mean=tuple(means),
    )


def synth_stats(data_dir: str | Path) -> DatasetStats:
    """Statistics of a set written by ``generate_dataset`` (``train_images/*.jpg`` + ``train.csv``).

    Images in ``train_images`` without rows in ``train.csv`` count as clean.
    """
    root = Path(data_dir)
    csv_path, images_dir = root / "train.csv", root / "train_images"
    if not csv_path.is_file() or not images_dir.is_dir():
        raise FileNotFoundError(f"{root} is not a synthetic set: expected train.csv and train_images/ in it")
    annotations = read_annotations(csv_path, images_dir=images_dir)
    areas = np.asarray(
        [[rle_area(rle) if rle else 0 for rle in annotations.rles[i]] for i in annotations.image_ids], dtype=np.int64
    ).reshape(-1, NUM_CLASSES)
    return stats_from_areas(areas, source=str(root))


def default_real_index() -> Path:
    """The real slice's ``train-index.csv`` at ``../shared/severstal-real`` next to the project.

    Looks beside the source checkout first, then beside the working directory; returns the first
    candidate when neither exists.
    """
    candidates = [
        base / "shared" / "severstal-real" / "train-index.csv"
        for base in (Path(__file__).resolve().parents[3], Path.cwd().resolve().parent)
    ]
    return next((p for p in candidates if p.is_file()), candidates[0])


def reference_stats() -> DatasetStats:
    """Statistics of the real train set from the summary constants in ``reference.py`` (no file needed)."""
    counts = REAL_COMBINATION_COUNTS
    n = REAL_NUM_IMAGES
    per_class = [sum(c for combo, c in counts.items() if str(k) in combo) for k in CLASS_IDS]
    idx = [AREA_PERCENTILES.index(float(p)) for p in STATS_PERCENTILES]
    return DatasetStats(
        source="real train set (summary constants)",
        num_images=n,
        clean_share=counts[""] / n,
        positives_per_image=sum(len(combo) * c for combo, c in counts.items()) / n,
        multi_label_share=sum(c for combo, c in counts.items() if len(combo) >= 2) / n,
        three_plus_share=sum(c for combo, c in counts.items() if len(combo) >= 3) / n,
        class_share=tuple(c / n for c in per_class),
        area_quantiles=tuple(tuple(float(knots[i]) for i in idx) for knots in REAL_AREA_KNOTS),
        area_mean=tuple(float(m) for m in REAL_AREA_MEAN),
    )


def real_stats(index_csv: str | Path | None = None) -> DatasetStats:
    """Statistics of the real train set.

    Args:
        index_csv: a ``train-index.csv`` (``ImageId,area_1..area_4``); default ``default_real_index()``.
            When it does not exist, the summary constants are used.
    """
    path = Path(index_csv) if index_csv is not None else default_real_index()
    if not path.is_file():
        if index_csv is not None:
            raise FileNotFoundError(f"real index {path} not found")
        return reference_stats()
    with path.open(newline="") as fh:
        rows = [[int(row[f"area_{k}"]) for k in CLASS_IDS] for row in csv.DictReader(fh)]
    return stats_from_areas(np.asarray(rows, dtype=np.int64), source=f"real train set ({path.name})")


def format_stats(synth: DatasetStats, real: DatasetStats | None = None) -> str:
    """A markdown table of ``synth`` with ``real`` alongside (``synth / real`` in each cell)."""

    def pair(a: float, b: float | None, fmt: str) -> str:
        left = format(a, fmt) if np.isfinite(a) else "-"
        return left if b is None else f"{left} / {format(b, fmt) if np.isfinite(b) else '-'}"

    header = "synth / real" if real is not None else "synth"
    lines = [
        f"{synth.num_images} images ({synth.source})" + (f" vs {real.num_images} ({real.source})" if real else ""),
        "",
        f"| image statistic | {header} |",
        "|---|---|",
    ]
    for label, attr in (
        ("clean share", "clean_share"),
        ("positive classes per image", "positives_per_image"),
        ("multi-label share (2+ classes)", "multi_label_share"),
        ("three-class share", "three_plus_share"),
    ):
        fmt = ".3f" if attr == "positives_per_image" else ".1%"
        lines.append(f"| {label} | {pair(getattr(synth, attr), getattr(real, attr) if real else None, fmt)} |")
    cols = " | ".join(f"area p{p}" for p in STATS_PERCENTILES)
    lines += ["", f"| class | share of images | {cols} | area mean |", "|---" * (3 + len(STATS_PERCENTILES)) + "|"]
    for k in range(NUM_CLASSES):
        cells = [pair(synth.class_share[k], real.class_share[k] if real else None, ".1%")]
        for j in range(len(STATS_PERCENTILES)):
            cells.append(pair(synth.area_quantiles[k][j], real.area_quantiles[k][j] if real else None, ",.0f"))
        cells.append(pair(synth.area_mean[k], real.area_mean[k] if real else None, ",.0f"))
        lines.append(f"| {CLASS_IDS[k]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
