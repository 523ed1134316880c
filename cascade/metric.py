"""The Kaggle Severstal metric: mean Dice over every (image, class) pair.

Dice of one pair is ``2 |P & T| / (|P| + |T|)``; an empty prediction of an empty truth scores 1 and an
empty prediction of a non-empty truth (or the reverse) scores 0. The leaderboard score is the plain mean
over all ``N * C`` pairs (``C`` = 4 for Severstal), so the per-class figures below average to it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from cascade.constants import CLASS_IDS, CLASS_NAMES, IMAGE_SHAPE
from cascade.formats import Annotations
from cascade.rle import decode_runs

__all__ = ["DiceReport", "dice_pairs", "kaggle_dice", "score_annotations"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiceReport:
    """Mean Dice over every (image, class) pair, with the per-class means.

    Attributes:
        mean: Kaggle score, the mean over all ``n_images * C`` pairs.
        per_class: mean Dice of each class over all images, in class-id order.
        n_images: number of images scored.
        class_ids: the classes of ``per_class`` (default Severstal's).
        class_names: their names (default ``class_<id>``, Severstal's names for Severstal's ids).
    """

    mean: float
    per_class: tuple[float, ...]
    n_images: int
    class_ids: tuple[int, ...] = CLASS_IDS
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.per_class) != len(self.class_ids):
            raise ValueError(f"{len(self.per_class)} per-class values for class ids {list(self.class_ids)}")
        if not self.class_names:
            names = CLASS_NAMES if tuple(self.class_ids) == CLASS_IDS else tuple(f"class_{c}" for c in self.class_ids)
            object.__setattr__(self, "class_names", names)

    @classmethod
    def from_pairs(
        cls, pairs: np.ndarray, class_ids: Sequence[int] | None = None, class_names: Sequence[str] = ()
    ) -> DiceReport:
        """Report from per-pair Dice values ``(N, C)`` (``class_ids`` default: Severstal's when ``C`` is 4)."""
        pairs = np.asarray(pairs, dtype=np.float64)
        ids = CLASS_IDS if class_ids is None else tuple(class_ids)
        if pairs.ndim != 2 or pairs.shape[1] != len(ids):
            hint = "" if class_ids is not None else " (Severstal's classes; pass class_ids for another class set)"
            raise ValueError(f"pairs must have shape (N, {len(ids)}){hint}, got {pairs.shape}")
        if pairs.shape[0] == 0:
            raise ValueError("no images to score")
        per_class = tuple(float(v) for v in pairs.mean(axis=0))
        return cls(float(pairs.mean()), per_class, int(pairs.shape[0]), ids, tuple(class_names))

    def format_table(self) -> str:
        """Plain-text table: one line per class and the overall mean."""
        lines = [f"{'class':<20} {'dice':>8}"]
        for class_id, name, value in zip(self.class_ids, self.class_names, self.per_class, strict=True):
            lines.append(f"{f'{class_id} {name}':<20} {value:>8.5f}")
        lines.append(f"{'mean':<20} {self.mean:>8.5f}")
        n = len(self.class_ids)
        lines.append(f"({self.n_images} images x {n} classes = {self.n_images * n} pairs)")
        return "\n".join(lines)


def dice_pairs(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Dice of every (image, class) pair.

    Args:
        pred: ``(N, C, H, W)`` bool predicted masks (nonzero = foreground).
        truth: ``(N, C, H, W)`` bool true masks.

    Returns:
        ``(N, C)`` float64; 1.0 where both masks are empty.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape or pred.ndim != 4:
        raise ValueError(f"pred and truth must both be (N, C, H, W); got {pred.shape} and {truth.shape}")
    pred, truth = pred.astype(bool, copy=False), truth.astype(bool, copy=False)
    inter = np.count_nonzero(pred & truth, axis=(2, 3))
    total = np.count_nonzero(pred, axis=(2, 3)) + np.count_nonzero(truth, axis=(2, 3))
    return _dice(inter, total)


def kaggle_dice(pred: np.ndarray, truth: np.ndarray, class_ids: Sequence[int] | None = None) -> DiceReport:
    """Kaggle score of ``(N, C, H, W)`` predicted masks against the true ones."""
    return DiceReport.from_pairs(dice_pairs(pred, truth), class_ids)


def score_annotations(
    truth: Annotations,
    pred: Annotations,
    shape: tuple[int, int] | None = IMAGE_SHAPE,
    *,
    progress: bool = False,
    class_names: Sequence[str] = (),
) -> DiceReport:
    """Kaggle score of predicted against true annotations, one image at a time (low memory).

    Images of ``truth`` that ``pred`` lacks count as all-empty predictions. Nothing is decoded to masks:
    areas and intersections come from the runs.

    Args:
        truth: true annotations; every image in ``truth.image_ids`` is scored, over ``truth.class_ids``.
        pred: predictions (a read submission) of the same classes.
        shape: ``(H, W)`` of images whose size ``truth.shapes`` does not record; runs past ``H * W`` are an
            error. None: such images are not checked for size (Dice itself needs no size).
        progress: show a tqdm progress bar.
        class_names: names for the report.

    Raises:
        ValueError: ``pred`` has images that ``truth`` lacks, or other classes (the message names some).
    """
    extra = [i for i in pred.image_ids if i not in truth.rles]
    if extra:
        raise ValueError(f"{len(extra)} predicted images are not in the truth, e.g. {extra[:5]}")
    if tuple(pred.class_ids) != tuple(truth.class_ids):
        raise ValueError(f"predictions have classes {list(pred.class_ids)}, the truth {list(truth.class_ids)}")
    n_classes = len(truth.class_ids)
    empty = ("",) * n_classes
    pairs = np.zeros((len(truth), n_classes), dtype=np.float64)
    ids: Iterable[str] = truth.image_ids
    if progress:
        from tqdm import tqdm

        ids = tqdm(ids, desc="scoring", unit="image")
    for row, image_id in enumerate(ids):
        size = truth.shapes.get(image_id, shape)
        n_pixels = None if size is None else int(size[0]) * int(size[1])
        for k, (p, t) in enumerate(zip(pred.rles.get(image_id, empty), truth.rles[image_id], strict=True)):
            p_runs, t_runs = _runs(p, n_pixels), _runs(t, n_pixels)
            if p_runs is None or t_runs is None:
                pairs[row, k] = float(p_runs is None and t_runs is None)
            else:
                area = int(p_runs[1].sum() + t_runs[1].sum())
                pairs[row, k] = 2.0 * _runs_intersection(p_runs, t_runs) / area
    logger.debug("scored %d images against %d predicted", len(truth), len(pred))
    return DiceReport.from_pairs(pairs, truth.class_ids, class_names)


def _dice(inter: np.ndarray, total: np.ndarray) -> np.ndarray:
    out = np.ones(inter.shape, dtype=np.float64)
    nonempty = total > 0
    out[nonempty] = 2.0 * inter[nonempty] / total[nonempty]
    return out


def _runs(rle: str, n_pixels: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Validated ``(starts, lengths)`` of ``rle``, or None when it has no run (every length is >= 1)."""
    if not rle.strip():
        return None
    runs = decode_runs(rle, n_pixels)
    return runs if runs[0].size else None


def _runs_intersection(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> int:
    """Pixels covered by both run lists ``(starts, lengths)``: sweep their sorted boundaries, count depth 2."""
    starts = np.concatenate([a[0], b[0]])
    ends = starts + np.concatenate([a[1], b[1]])
    positions = np.concatenate([starts, ends])
    steps = np.concatenate([np.ones(starts.size, np.int64), -np.ones(ends.size, np.int64)])
    order = np.argsort(positions, kind="stable")
    positions, depth = positions[order], np.cumsum(steps[order])
    return int(np.diff(positions)[depth[:-1] == 2].sum())
