"""What a bundle's gate costs and scores: the Dice / segmenter-runs trade-off measured when it was tuned.

For every class, :class:`ClassGateCurve` records at each gate threshold of the tuning grid the class's
mean Dice (with the pixel threshold and min-area that threshold would get), the share of images the gate
opens for (that class's segmenter runs per image) and the share of positive images it opens for (recall).
:class:`GateCurve` adds the Pareto frontier of the whole cascade (mean Dice against segmenter runs per
image, each point a choice of one threshold per class), the chosen point and the Dice-only point
(``cost_weight`` 0, no budget). The curve is an optional manifest field (``BundleManifest.gate_curve``):
bundles tuned before it existed have none.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

from cascade.calibration import Calibration
from cascade.specs import ClassParams
from cascade.typed_config import Dialect, from_dict

__all__ = ["ClassGateCurve", "GateCurve", "GatePoint", "GatedBundle", "describe_gate", "gate_summary"]


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def _numbers(values: Any, name: str, low: float, high: float, length: int | None = None) -> tuple[float, ...]:
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a list of numbers, got {values!r}")
    if length is not None and len(values) != length:
        raise ValueError(f"{name} must have {length} values (one per gate threshold), got {len(values)}")
    return tuple(_number(v, f"{name}[{i}]", low, high) for i, v in enumerate(values))


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return value


_DIALECT = Dialect.of_fields(lambda path: f"gate_curve.{path}" if path else "gate_curve", check_scalars=False)


@dataclass(frozen=True)
class GatePoint:
    """One operating point of the whole cascade.

    Attributes:
        runs_per_image: segmenter runs per image, summed over the classes (0..number of classes).
        dice: Kaggle mean Dice (over images and classes) on the tuning images.
        prob_thresholds: the gate threshold of each class, in class order.
    """

    runs_per_image: float
    dice: float
    prob_thresholds: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "runs_per_image", _number(self.runs_per_image, "GatePoint.runs_per_image", 0, 1e6))
        object.__setattr__(self, "dice", _number(self.dice, "GatePoint.dice", 0.0, 1.0))
        object.__setattr__(
            self, "prob_thresholds", _numbers(self.prob_thresholds, "GatePoint.prob_thresholds", 0.0, 1.0)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"runs_per_image": self.runs_per_image, "dice": self.dice, "prob_thresholds": list(self.prob_thresholds)}


@dataclass(frozen=True)
class ClassGateCurve:
    """The gate of one class at every threshold of the tuning grid.

    Attributes:
        prob_thresholds: ascending gate thresholds (0 opens the gate for every image).
        dice: the class's best mean Dice at each threshold (with ``pixel_thresholds``/``min_areas``); a tuned
            point, picked with a tolerance, may sit up to that tolerance below.
        pass_rate: share of images the gate opens for = the class's segmenter runs per image (non-increasing).
        recall: share of the class's positive images the gate opens for (non-increasing; 1 without positives).
        pixel_thresholds: the pixel threshold tuned for each gate threshold.
        min_areas: the min-area tuned for each gate threshold.
        positives: positive tuning images of the class.
        positive_dice: mean Dice on the positive tuning images at the bundle's chosen parameters.
        note: why the class is flagged unpredictable or how its gate was constrained ("" when neither).
    """

    prob_thresholds: tuple[float, ...]
    dice: tuple[float, ...]
    pass_rate: tuple[float, ...]
    recall: tuple[float, ...]
    pixel_thresholds: tuple[float, ...]
    min_areas: tuple[int, ...]
    positives: int = 0
    positive_dice: float = 0.0
    note: str = ""

    def __post_init__(self) -> None:
        gates = _numbers(self.prob_thresholds, "ClassGateCurve.prob_thresholds", 0.0, 1.0)
        if not gates or any(b <= a for a, b in itertools.pairwise(gates)):
            raise ValueError(f"ClassGateCurve.prob_thresholds must be strictly ascending, got {list(gates)}")
        n = len(gates)
        object.__setattr__(self, "prob_thresholds", gates)
        for attr in ("dice", "pass_rate", "recall", "pixel_thresholds"):
            object.__setattr__(self, attr, _numbers(getattr(self, attr), f"ClassGateCurve.{attr}", 0.0, 1.0, n))
        for attr in ("pass_rate", "recall"):
            values = getattr(self, attr)
            if any(b > a + 1e-12 for a, b in itertools.pairwise(values)):
                raise ValueError(f"ClassGateCurve.{attr} must not increase with the threshold, got {list(values)}")
        areas = self.min_areas
        if isinstance(areas, str) or not isinstance(areas, Sequence) or len(areas) != n:
            raise ValueError(f"ClassGateCurve.min_areas must be {n} integers, got {areas!r}")
        object.__setattr__(
            self, "min_areas", tuple(_count(a, f"ClassGateCurve.min_areas[{i}]") for i, a in enumerate(areas))
        )
        _count(self.positives, "ClassGateCurve.positives")
        object.__setattr__(self, "positive_dice", _number(self.positive_dice, "ClassGateCurve.positive_dice", 0, 1))
        if not isinstance(self.note, str):
            raise ValueError(f"ClassGateCurve.note must be a string, got {self.note!r}")

    def index(self, prob_threshold: float) -> int:
        """Index of the grid threshold closest to ``prob_threshold``."""
        return min(range(len(self.prob_thresholds)), key=lambda i: abs(self.prob_thresholds[i] - prob_threshold))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}


@dataclass(frozen=True)
class GateCurve:
    """The cascade's Dice / cost trade-off on its tuning images and the settings it was chosen with.

    Attributes:
        images: tuning images the curve was measured on.
        classes: one curve per class, in the manifest's class order.
        frontier: Pareto-optimal points, by increasing runs per image (and increasing Dice).
        chosen: the point the bundle's thresholds give.
        dice_only: the point tuning for Dice alone gives (``cost_weight`` 0, no budget).
        cost_weight: lambda of the objective ``Dice - lambda * runs_per_image`` used.
        max_runs_per_image: the budget on segmenter runs per image used (None: no budget).
        min_recall: the smallest gate recall on positives allowed per class (0: none).
        calibrated: whether the thresholds apply to calibrated probabilities.
    """

    images: int
    classes: tuple[ClassGateCurve, ...]
    frontier: tuple[GatePoint, ...]
    chosen: GatePoint
    dice_only: GatePoint
    cost_weight: float = 0.0
    max_runs_per_image: float | None = None
    min_recall: float = 0.0
    calibrated: bool = False

    def __post_init__(self) -> None:
        _count(self.images, "GateCurve.images")
        if not all(isinstance(c, ClassGateCurve) for c in self.classes) or not self.classes:
            raise ValueError("GateCurve.classes must be one ClassGateCurve per class")
        object.__setattr__(self, "classes", tuple(self.classes))
        n = len(self.classes)
        points = (*self.frontier, self.chosen, self.dice_only)
        if not all(isinstance(p, GatePoint) for p in points):
            raise ValueError("GateCurve.frontier, chosen and dice_only must be GatePoints")
        if bad := [p for p in points if len(p.prob_thresholds) != n or p.runs_per_image > n + 1e-9]:
            raise ValueError(f"GateCurve points must have {n} thresholds and at most {n} runs per image, got {bad[0]}")
        object.__setattr__(self, "frontier", tuple(self.frontier))
        pairs = itertools.pairwise(self.frontier)
        if any(b.runs_per_image <= a.runs_per_image or b.dice <= a.dice for a, b in pairs):
            raise ValueError("GateCurve.frontier must be strictly increasing in both runs_per_image and dice")
        object.__setattr__(self, "cost_weight", _number(self.cost_weight, "GateCurve.cost_weight", 0.0, 1e6))
        if self.max_runs_per_image is not None:
            budget = _number(self.max_runs_per_image, "GateCurve.max_runs_per_image", 0.0, 1e6)
            object.__setattr__(self, "max_runs_per_image", budget)
        object.__setattr__(self, "min_recall", _number(self.min_recall, "GateCurve.min_recall", 0.0, 1.0))
        if not isinstance(self.calibrated, bool):
            raise ValueError(f"GateCurve.calibrated must be true or false, got {self.calibrated!r}")

    def best_within(self, max_runs_per_image: float) -> GatePoint:
        """The frontier point with the highest Dice using at most ``max_runs_per_image`` (else the cheapest)."""
        within = [p for p in self.frontier if p.runs_per_image <= max_runs_per_image + 1e-12]
        return within[-1] if within else self.frontier[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "images": self.images,
            "cost_weight": self.cost_weight,
            "max_runs_per_image": self.max_runs_per_image,
            "min_recall": self.min_recall,
            "calibrated": self.calibrated,
            "chosen": self.chosen.to_dict(),
            "dice_only": self.dice_only.to_dict(),
            "classes": [c.to_dict() for c in self.classes],
            "frontier": [p.to_dict() for p in self.frontier],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateCurve:
        """From :meth:`to_dict` output, strictly (``cascade.typed_config``); ``ValueError`` names the bad field."""
        try:
            return from_dict(cls, data, _DIALECT)
        except TypeError as err:
            raise ValueError(f"gate_curve: {err}") from err

    def describe(
        self, class_ids: Sequence[int], class_names: Sequence[str], prob_thresholds: Sequence[float]
    ) -> list[str]:
        """Readable lines: chosen vs Dice-only point and, per class, what its gate threshold costs and scores.

        Args:
            class_ids: the manifest's class ids.
            class_names: the manifest's class names.
            prob_thresholds: the bundle's gate threshold per class.
        """
        budget = "none" if self.max_runs_per_image is None else f"{self.max_runs_per_image:g} runs/image"
        lines = [
            f"  tuned on {self.images} images ({'calibrated' if self.calibrated else 'raw'} probabilities); "
            f"cost weight {self.cost_weight:g}, budget {budget}, min recall {self.min_recall:g}",
            f"  chosen:    {self.chosen.runs_per_image:.3f} segmenter runs/image, Dice {self.chosen.dice:.4f}",
            f"  Dice-only: {self.dice_only.runs_per_image:.3f} segmenter runs/image, Dice {self.dice_only.dice:.4f}",
            f"  {'id':<3}{'name':<17}{'prob_thr':>9}{'runs/img':>9}{'recall':>8}{'Dice':>8}{'positives':>10}  note",
        ]
        for cid, name, curve, threshold in zip(class_ids, class_names, self.classes, prob_thresholds, strict=True):
            i = curve.index(threshold)
            lines.append(
                f"  {cid:<3}{name:<17}{threshold:>9.3f}{curve.pass_rate[i]:>9.3f}{curve.recall[i]:>8.3f}"
                f"{curve.dice[i]:>8.4f}{curve.positives:>10}  {curve.note}"
            )
        frontier = ", ".join(
            f"{p.runs_per_image:.2f}:{p.dice:.4f}" for p in self.frontier[:: max(1, len(self.frontier) // 8)]
        )
        lines.append(f"  Pareto frontier ({len(self.frontier)} points, runs/image:Dice): {frontier}")
        return lines


class GatedBundle(Protocol):
    """What :func:`gate_summary` and :func:`describe_gate` read of a bundle; ``cascade.manifest.BundleManifest``
    is one. A structural type, because the manifest holds a :class:`GateCurve`: this module sits below it and
    imports nothing from it."""

    @property
    def class_ids(self) -> tuple[int, ...]: ...

    @property
    def class_names(self) -> tuple[str, ...]: ...

    @property
    def classes(self) -> tuple[ClassParams, ...]: ...

    @property
    def calibration(self) -> tuple[Calibration, ...]: ...

    @property
    def gate_curve(self) -> GateCurve | None: ...


def gate_summary(manifest: GatedBundle) -> dict[str, Any]:
    """JSON-ready summary of a bundle's gate: calibration, chosen and Dice-only points, unpredictable classes.

    ``chosen``/``dice_only`` are None when the bundle has no gate curve.
    """
    curve = manifest.gate_curve
    return {
        "calibrated": bool(manifest.calibration),
        "calibration": [c.to_dict() for c in manifest.calibration] or None,
        "chosen": curve.chosen.to_dict() if curve else None,
        "dice_only": curve.dice_only.to_dict() if curve else None,
        "tuning_images": curve.images if curve else None,
        "cost_weight": curve.cost_weight if curve else None,
        "max_runs_per_image": curve.max_runs_per_image if curve else None,
        "unpredictable_classes": [
            cid for cid, params in zip(manifest.class_ids, manifest.classes, strict=True) if not params.predictable
        ],
    }


def describe_gate(manifest: GatedBundle) -> list[str]:
    """Readable lines for ``cascade bundle info``: calibration, what the gate costs and scores, flagged classes."""
    lines = ["Gate:"]
    if manifest.calibration:
        pairs = ", ".join(
            f"{cid}: T={c.temperature:.3f} b={c.bias:+.3f}"
            for cid, c in zip(manifest.class_ids, manifest.calibration, strict=True)
        )
        lines.append(f"  calibration (p' = sigmoid(logit(p)/T + b)): {pairs}")
    else:
        lines.append("  calibration: none (thresholds on the classifier's raw probabilities)")
    thresholds = [p.prob_threshold for p in manifest.classes]
    if manifest.gate_curve is not None:
        lines += manifest.gate_curve.describe(manifest.class_ids, manifest.class_names, thresholds)
    else:
        lines.append("  no gate curve (tuned before costs were recorded)")
    flagged = [
        f"{cid} {name}"
        for cid, name, params in zip(manifest.class_ids, manifest.class_names, manifest.classes, strict=True)
        if not params.predictable
    ]
    if flagged:
        lines.append(f"  UNPREDICTABLE classes (the bundle cannot be trusted on them): {', '.join(flagged)}")
    return lines
