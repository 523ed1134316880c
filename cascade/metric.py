"""The Kaggle Severstal metric: mean Dice over every (image, class) pair.

Dice of one pair is ``2 |P & T| / (|P| + |T|)``; an empty prediction of an empty truth scores 1 and an
empty prediction of a non-empty truth (or the reverse) scores 0. The leaderboard score is the plain mean
over all ``N * 4`` pairs, so the per-class figures below average to it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from cascade.constants import CLASS_IDS, CLASS_NAMES, IMAGE_SHAPE, NUM_CLASSES
from cascade.formats import Annotations
from cascade.rle import decode_runs

__all__ = ["DiceReport", "dice_pairs", "kaggle_dice", "score_annotations"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiceReport:
    """Mean Dice over every (image, class) pair, with the per-class means.

    Attributes:
        mean: Kaggle score, the mean over all ``n_images * 4`` pairs.
        per_class: mean Dice of each class over all images, in class-id order.
        n_images: number of images scored.
    """

    mean: float
    per_class: tuple[float, float, float, float]
    n_images: int

    @classmethod
    def from_pairs(cls, pairs: np.ndarray) -> DiceReport:
        """Report from per-pair Dice values ``(N, 4)``."""
        pairs = np.asarray(pairs, dtype=np.float64)
        if pairs.ndim != 2 or pairs.shape[1] != NUM_CLASSES:
            raise ValueError(f"pairs must have shape (N, {NUM_CLASSES}), got {pairs.shape}")
        if pairs.shape[0] == 0:
            raise ValueError("no images to score")
        per_class = tuple(float(v) for v in pairs.mean(axis=0))
        return cls(float(pairs.mean()), per_class, int(pairs.shape[0]))  # type: ignore[arg-type]

    def format_table(self) -> str:
        """Plain-text table: one line per class and the overall mean."""
        lines = [f"{'class':<20} {'dice':>8}"]
        for class_id, name, value in zip(CLASS_IDS, CLASS_NAMES, self.per_class, strict=True):
            lines.append(f"{f'{class_id} {name}':<20} {value:>8.5f}")
        lines.append(f"{'mean':<20} {self.mean:>8.5f}")
        lines.append(f"({self.n_images} images x {NUM_CLASSES} classes = {self.n_images * NUM_CLASSES} pairs)")
        return "\n".join(lines)


def dice_pairs(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Dice of every (image, class) pair.

    Args:
        pred: ``(N, 4, H, W)`` bool predicted masks (nonzero = foreground).
        truth: ``(N, 4, H, W)`` bool true masks.

    Returns:
        ``(N, 4)`` float64; 1.0 where both masks are empty.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape or pred.ndim != 4:
        raise ValueError(f"pred and truth must both be (N, C, H, W); got {pred.shape} and {truth.shape}")
    pred, truth = pred.astype(bool, copy=False), truth.astype(bool, copy=False)
    inter = np.count_nonzero(pred & truth, axis=(2, 3))
    total = np.count_nonzero(pred, axis=(2, 3)) + np.count_nonzero(truth, axis=(2, 3))
    return _dice(inter, total)


def kaggle_dice(pred: np.ndarray, truth: np.ndarray) -> DiceReport:
    """Kaggle score of ``(N, 4, H, W)`` predicted masks against the true ones."""
    return DiceReport.from_pairs(dice_pairs(pred, truth))


def score_annotations(
    truth: Annotations,
    pred: Annotations,
    shape: tuple[int, int] = IMAGE_SHAPE,
    *,
    progress: bool = False,
) -> DiceReport:
    """Kaggle score of predicted against true annotations, one image at a time (low memory).

    Images of ``truth`` that ``pred`` lacks count as all-empty predictions. Nothing is decoded to masks:
    areas and intersections come from the runs.

    Args:
        truth: true annotations; every image in ``truth.image_ids`` is scored.
        pred: predictions (a read submission).
        shape: ``(H, W)`` of the masks.
        progress: show a tqdm progress bar.

    Raises:
        ValueError: ``pred`` has images that ``truth`` lacks (the message names some).
    """
    extra = [i for i in pred.image_ids if i not in truth.rles]
    if extra:
        raise ValueError(f"{len(extra)} predicted images are not in the truth, e.g. {extra[:5]}")
    empty = ("",) * NUM_CLASSES
    n_pixels = int(shape[0]) * int(shape[1])
    pairs = np.zeros((len(truth), NUM_CLASSES), dtype=np.float64)
    ids: Iterable[str] = truth.image_ids
    if progress:
        from tqdm import tqdm

        ids = tqdm(ids, desc="scoring", unit="image")
    for row, image_id in enumerate(ids):
        for k, (p, t) in enumerate(zip(pred.rles.get(image_id, empty), truth.rles[image_id], strict=True)):
            p_runs, t_runs = _runs(p, n_pixels), _runs(t, n_pixels)
            if p_runs is None or t_runs is None:
                pairs[row, k] = float(p_runs is None and t_runs is None)
            else:
                area = int(p_runs[1].sum() + t_runs[1].sum())
                pairs[row, k] = 2.0 * _runs_intersection(p_runs, t_runs) / area
    logger.debug("scored %d images against %d predicted", len(truth), len(pred))
    return DiceReport.from_pairs(pairs)


def _dice(inter: np.ndarray, total: np.ndarray) -> np.ndarray:
    out = np.ones(inter.shape, dtype=np.float64)
    nonempty = total > 0
    out[nonempty] = 2.0 * inter[nonempty] / total[nonempty]
    return out


def _runs(rle: str, n_pixels: int) -> tuple[np.ndarray, np.ndarray] | None:
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
