"""The held-out results of one bundle (:class:`Evaluation`) and the metrics derived from them.

Written by the ``evaluate`` stage (:mod:`training.evaluate`), read by the report (:mod:`training.report`,
:mod:`training.gate_report`); this module imports none of them, so the stage imports the report one way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cascade.calibration import expected_calibration_error
from cascade.metric import DiceReport

__all__ = ["Evaluation"]


@dataclass(frozen=True)
class Evaluation:
    """Held-out results of one bundle.

    Attributes:
        cascade: Kaggle Dice of the cascade.
        segment_all: Kaggle Dice with every gate open.
        empty: Kaggle Dice of predicting nothing.
        probabilities: ``(N, C)`` classifier probabilities.
        labels: ``(N, C)`` bool truth.
        gate: ``(N, C)`` bool gate decisions of the cascade.
        grid_scores: class id -> ``(T, P, M)`` held-out Dice over the tuning grid.
        uncalibrated: ``(N, C)`` probabilities before the bundle's calibration (None: the bundle has none).
        seconds_per_image: measured seconds per image of ``preprocess`` + ``classifier`` (key ``classifier``)
            and of each segmenter with its post-processing and RLE (``segmenter_<id>``), from the segment-all run.
        ood_scores: ``(N,)`` out-of-distribution scores (None: the bundle has no reference).
        ood_threshold: the bundle's out-of-distribution threshold (None without a reference).
        image_dice: ``(N, C)`` Dice of the cascade on every (image, class) pair, rows in the annotations' order
            (the error gallery's input; None when not computed).
    """

    cascade: DiceReport
    segment_all: DiceReport
    empty: DiceReport
    probabilities: np.ndarray
    labels: np.ndarray
    gate: np.ndarray
    grid_scores: dict[int, np.ndarray]
    uncalibrated: np.ndarray | None = None
    seconds_per_image: dict[str, float] = dataclasses.field(default_factory=dict)
    ood_scores: np.ndarray | None = None
    ood_threshold: float | None = None
    image_dice: np.ndarray | None = None

    def images_per_second(self, pass_rates: Sequence[float]) -> float | None:
        """Images/s this machine sustains when each class's segmenter runs on ``pass_rates`` of the images."""
        if not self.seconds_per_image:
            return None
        seconds = self.seconds_per_image["classifier"] + sum(
            rate * self.seconds_per_image[f"segmenter_{c}"]
            for c, rate in zip(self.cascade.class_ids, pass_rates, strict=True)
        )
        return 1.0 / seconds if seconds > 0 else None

    def gate_metrics(self) -> dict[str, Any]:
        """Segmenter runs per image, per-class pass rate against positive rate and recall, estimated images/s
        of the cascade and of segment-all, and the ECE before/after calibration."""
        pass_rates = self.gate.mean(axis=0)
        per_class = {}
        for k, class_id in enumerate(self.cascade.class_ids):
            y = self.labels[:, k]
            per_class[str(class_id)] = {
                "pass_rate": float(pass_rates[k]),
                "positive_rate": float(y.mean()),
                "recall": float(self.gate[y, k].mean()) if y.any() else None,
                "ece": expected_calibration_error(self.probabilities[:, k], y),
            }
        out: dict[str, Any] = {
            "runs_per_image": float(pass_rates.sum()),
            "positives_per_image": float(self.labels.mean(axis=0).sum()),
            "per_class": per_class,
            "images_per_second": {
                "cascade": self.images_per_second(pass_rates),
                "segment_all": self.images_per_second([1.0] * len(pass_rates)),
            },
            "seconds_per_image": dict(self.seconds_per_image),
            "ece": expected_calibration_error(self.probabilities, self.labels),
        }
        if self.uncalibrated is not None:
            out["ece_uncalibrated"] = expected_calibration_error(self.uncalibrated, self.labels)
            for k, class_id in enumerate(self.cascade.class_ids):
                y = self.labels[:, k]
                per_class[str(class_id)]["ece_uncalibrated"] = expected_calibration_error(self.uncalibrated[:, k], y)
        return out

    def classifier_metrics(self) -> dict[str, dict[str, float]]:
        """Per class: ROC AUC (``nan`` when one label is missing) and F1 of the gate."""
        from sklearn.metrics import f1_score, roc_auc_score

        out = {}
        for k, class_id in enumerate(self.cascade.class_ids):
            y, p = self.labels[:, k], self.probabilities[:, k]
            auc = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")
            f1 = float(f1_score(y, self.gate[:, k], zero_division=1.0))
            out[str(class_id)] = {"auc": auc, "f1": f1, "positives": int(y.sum())}
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""

        def report(r: DiceReport) -> dict[str, Any]:
            return {"mean": r.mean, "per_class": dict(zip(map(str, r.class_ids), r.per_class, strict=True))}

        return {
            "images": self.cascade.n_images,
            "dice_cascade": self.cascade.mean,
            "dice_segment_all": self.segment_all.mean,
            "dice_empty": self.empty.mean,
            "cascade": report(self.cascade),
            "segment_all": report(self.segment_all),
            "empty": report(self.empty),
            "classifier": self.classifier_metrics(),
            "segmenter_share": float(self.gate.mean()),
            "gate": self.gate_metrics(),
            **({"ood": self.ood_metrics()} if self.ood_scores is not None else {}),
        }

    def ood_metrics(self) -> dict[str, float]:
        """Share of held-out images flagged out of distribution (should be small), median score, threshold."""
        scores = np.asarray(self.ood_scores)
        return {
            "threshold": float(self.ood_threshold or 0.0),
            "flagged_share": float(np.mean(scores > (self.ood_threshold or 0.0))) if scores.size else 0.0,
            "median_score": float(np.median(scores)) if scores.size else 0.0,
        }
