"""Out-of-fold classifier probabilities: the table written by the classifier stage and read by mining and tuning.

CSV columns: ``ImageId,fold,prob_1..prob_4,label_1..label_4`` (``fold`` = the fold whose model did *not*
see the image). Probabilities are written with 9 significant digits, so float32 values read back exactly:
fixed decimals would round tiny probabilities to ties at 0, which blur the ranking tuning and calibration see.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cascade.constants import CLASS_IDS

__all__ = ["OofTable", "read_oof", "write_oof"]


@dataclass(frozen=True)
class OofTable:
    """Out-of-fold predictions for every training image.

    Attributes:
        image_ids: ``N`` image ids.
        folds: ``(N,)`` int fold index of each image's validation fold.
        probabilities: ``(N, C)`` float probabilities from the model that did not train on the image.
        labels: ``(N, C)`` bool truth.
        class_ids: the ``C`` classes of the columns.
    """

    image_ids: tuple[str, ...]
    folds: np.ndarray
    probabilities: np.ndarray
    labels: np.ndarray
    class_ids: tuple[int, ...] = CLASS_IDS

    def select(self, image_ids: Sequence[str]) -> OofTable:
        """Rows of ``image_ids``, in that order.

        Raises:
            KeyError: an id is not in the table.
        """
        index = {image_id: i for i, image_id in enumerate(self.image_ids)}
        missing = [i for i in image_ids if i not in index]
        if missing:
            raise KeyError(f"{len(missing)} image(s) missing from the out-of-fold table, e.g. {missing[:3]}")
        rows = np.array([index[i] for i in image_ids], dtype=np.int64)
        return OofTable(tuple(image_ids), self.folds[rows], self.probabilities[rows], self.labels[rows], self.class_ids)


def write_oof(path: str | Path, table: OofTable) -> Path:
    """Write ``table`` as CSV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        ids = table.class_ids
        writer.writerow(["ImageId", "fold", *(f"prob_{c}" for c in ids), *(f"label_{c}" for c in ids)])
        for i, image_id in enumerate(table.image_ids):
            probs = [f"{p:.9g}" for p in table.probabilities[i]]  # float32 exactly: 1e-9 and 1e-12 stay apart
            labels = [str(int(v)) for v in table.labels[i]]
            writer.writerow([image_id, int(table.folds[i]), *probs, *labels])
    return path


def read_oof(path: str | Path) -> OofTable:
    """Read a table written by :func:`write_oof`.

    Raises:
        FileNotFoundError: ``path`` is missing (run the classifier stage first).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"out-of-fold table not found: {path} (run the 'classifier' stage first)")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        ids = tuple(int(name.removeprefix("prob_")) for name in reader.fieldnames or () if name.startswith("prob_"))
    return OofTable(
        image_ids=tuple(r["ImageId"] for r in rows),
        folds=np.array([int(r["fold"]) for r in rows], dtype=np.int64),
        probabilities=np.array([[float(r[f"prob_{c}"]) for c in ids] for r in rows], dtype=np.float64).reshape(
            -1, len(ids)
        ),
        labels=np.array([[r[f"label_{c}"] == "1" for c in ids] for r in rows], dtype=bool).reshape(-1, len(ids)),
        class_ids=ids,
    )
