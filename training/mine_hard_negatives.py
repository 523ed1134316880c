"""Hard-negative mining: per class, the images *without* that class that the classifier's out-of-fold
probability wrongly rates high. They join the class's positives in its segmenter's training set, so the
segmenter learns to leave look-alikes empty (the gate lets exactly such images through).

Run on its own: ``cascade train --config configs/demo-cpu.yaml --stage hard_negatives --out RUN_DIR``
(needs ``RUN_DIR/classifier/oof.csv``). Writes ``RUN_DIR/hard_negatives.csv`` with columns
``ImageId,ClassId,probability,kind`` (``kind`` = ``hard`` or ``random``).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cascade.constants import CLASS_IDS
from training.oof import read_oof
from training.stage_config import HardNegativeConfig

if TYPE_CHECKING:
    from training.workspace import Workspace

__all__ = ["HardNegative", "mine_hard_negatives", "read_hard_negatives", "run", "write_hard_negatives"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HardNegative:
    """One selected negative image of one class.

    Attributes:
        image_id: the image.
        class_id: the class it does not have.
        probability: its out-of-fold classifier probability for the class.
        kind: ``hard`` (high probability) or ``random`` (a clean image drawn at random).
    """

    image_id: str
    class_id: int
    probability: float
    kind: str


def mine_hard_negatives(
    image_ids: Sequence[str],
    probabilities: np.ndarray,
    labels: np.ndarray,
    config: HardNegativeConfig,
    seed: int = 0,
    class_ids: Sequence[int] = CLASS_IDS,
) -> list[HardNegative]:
    """Select, per class, the hard negatives and an optional random share of other images without the class.

    For class ``c`` with ``P`` positive images: the images without ``c`` whose probability is at least
    ``config.threshold``, highest first (ties by image id), at most ``floor(max_share * P)`` of them; then
    ``round(random_share * P)`` images drawn (with ``seed``) from the remaining images without ``c``.

    Args:
        image_ids: ``N`` image ids.
        probabilities: ``(N, C)`` out-of-fold probabilities.
        labels: ``(N, C)`` bool truth.
        config: threshold and shares.
        seed: seed of the random draw.
        class_ids: the ``C`` classes of the columns.

    Returns:
        Selected negatives, class by class, hard ones first.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    class_ids = tuple(class_ids)
    if probabilities.shape != (len(image_ids), len(class_ids)) or labels.shape != probabilities.shape:
        raise ValueError(
            f"probabilities {probabilities.shape} and labels {labels.shape} "
            f"must be ({len(image_ids)}, {len(class_ids)})"
        )
    rng = np.random.default_rng(seed)
    ids = np.asarray(image_ids, dtype=object)
    out: list[HardNegative] = []
    for k, class_id in enumerate(class_ids):
        positives = int(labels[:, k].sum())
        negatives = np.flatnonzero(~labels[:, k])
        candidates = negatives[probabilities[negatives, k] >= config.threshold]
        order = sorted(candidates, key=lambda i: (-probabilities[i, k], ids[i]))
        hard = order[: int(np.floor(config.max_share * positives))]
        out += [HardNegative(str(ids[i]), class_id, float(probabilities[i, k]), "hard") for i in hard]
        rest = np.setdiff1d(negatives, np.asarray(hard, dtype=np.int64))
        n_random = min(len(rest), round(config.random_share * positives))
        if n_random > 0:
            drawn = np.sort(rng.choice(rest, size=n_random, replace=False))
            out += [HardNegative(str(ids[i]), class_id, float(probabilities[i, k]), "random") for i in drawn]
        logger.info(
            "class %d: %d positives, %d hard negatives (of %d candidates >= %.2f), %d random",
            class_id, positives, len(hard), len(candidates), config.threshold, n_random,
        )  # fmt: skip
    return out


def write_hard_negatives(path: str | Path, negatives: Sequence[HardNegative]) -> Path:
    """Write the list as CSV ``ImageId,ClassId,probability,kind``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ImageId", "ClassId", "probability", "kind"])
        writer.writerows((n.image_id, n.class_id, f"{n.probability:.6f}", n.kind) for n in negatives)
    return path


def read_hard_negatives(path: str | Path) -> list[HardNegative]:
    """Read a list written by :func:`write_hard_negatives`."""
    with Path(path).open(newline="") as f:
        return [
            HardNegative(row["ImageId"], int(row["ClassId"]), float(row["probability"]), row["kind"])
            for row in csv.DictReader(f)
        ]


def run(ws: Workspace, resume: bool = False) -> Path:
    """Stage entry point: read ``classifier/oof.csv``, mine, write ``hard_negatives.csv``."""
    del resume
    config = ws.config
    oof = read_oof(ws.paths.oof_csv)
    negatives = mine_hard_negatives(
        oof.image_ids, oof.probabilities, oof.labels, config.hard_negatives, config.seed, oof.class_ids
    )
    return write_hard_negatives(ws.paths.hard_negatives_csv, negatives)
