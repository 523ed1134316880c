"""The evaluation report's gate section: what the gate costs and scores, rare classes, calibration.

``gate_section`` writes two plots and returns the report's markdown lines:

- ``gate_curve.png``: mean Dice against segmenter runs per image (the tuning fold's Pareto frontier, and
  the same thresholds on the held-out images), and held-out Dice against the images/s those runs allow on
  this machine (from the per-network times measured by the evaluation), with the chosen and the Dice-only
  points marked;
- ``reliability.png``: reliability diagrams per class, before and after the bundle's calibration.

Bundles tuned before the gate curve existed get the held-out numbers only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cascade.calibration import reliability_bins
from cascade.gate_curve import GateCurve, GatePoint
from training.evaluation import Evaluation

__all__ = ["HeldoutPoint", "gate_section", "heldout_point", "plot_gate_curve", "plot_reliability"]

HeldoutPoint = tuple[float, float, float | None]
"""``(segmenter runs per image, mean Dice, estimated images/s)`` on the held-out images."""


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid_index(values: Sequence[float], value: float) -> int:
    return int(np.argmin(np.abs(np.asarray(values, dtype=np.float64) - value)))


def heldout_point(
    point: GatePoint, curve: GateCurve, result: Evaluation, grid: Mapping[str, Sequence[float]]
) -> HeldoutPoint:
    """A tuning-fold operating point (its gate thresholds, with the pixel threshold and min-area tuned for each)
    scored on the held-out images."""
    dice, rates = [], []
    for k, class_id in enumerate(result.cascade.class_ids):
        threshold = point.prob_thresholds[k]
        at = curve.classes[k].index(threshold)
        index = (
            _grid_index(grid["prob_thresholds"], threshold),
            _grid_index(grid["pixel_thresholds"], curve.classes[k].pixel_thresholds[at]),
            _grid_index(grid["min_areas"], curve.classes[k].min_areas[at]),
        )
        dice.append(float(result.grid_scores[class_id][index]))
        rates.append(float(np.mean(result.probabilities[:, k] >= threshold)))
    return sum(rates), float(np.mean(dice)), result.images_per_second(rates)


def plot_gate_curve(
    path: Path,
    curve: GateCurve | None,
    heldout: Sequence[HeldoutPoint],
    marks: Mapping[str, tuple[GatePoint | None, HeldoutPoint]],
) -> Path:
    """Dice against segmenter runs per image (tuning fold and held-out) and against held-out images/s.

    Args:
        path: PNG to write.
        curve: the bundle's gate curve (None: no tuning-fold frontier).
        heldout: the frontier's points on the held-out images.
        marks: label -> (tuning-fold point or None, held-out point), e.g. chosen, Dice-only, segment_all.
    """
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    if curve is not None:
        left.plot([p.runs_per_image for p in curve.frontier], [p.dice for p in curve.frontier], "-", color="C0",
                  label="Pareto frontier, tuning fold")  # fmt: skip
    if heldout:
        left.plot([h[0] for h in heldout], [h[1] for h in heldout], "-", color="C1", alpha=0.8,
                  label="same thresholds, held-out")  # fmt: skip
        speed = [(h[2], h[1]) for h in heldout if h[2] is not None]
        if speed:
            right.plot([s for s, _ in speed], [d for _, d in speed], "-", color="C1", label="held-out")
    for (label, (tuned, held)), marker in zip(marks.items(), ("*", "o", "s", "D"), strict=False):
        if tuned is not None:
            left.plot(tuned.runs_per_image, tuned.dice, marker, color="C0", markersize=10, markerfacecolor="none")
        left.plot(held[0], held[1], marker, color="C1", markersize=10, label=label)
        if held[2] is not None:
            right.plot(held[2], held[1], marker, color="C1", markersize=10, label=label)
    left.set_xlabel("segmenter runs per image")
    right.set_xlabel("images/s on this machine (estimated from per-network times)")
    for ax in (left, right):
        ax.set_ylabel("mean Dice")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_reliability(
    path: Path,
    labels: np.ndarray,
    curves: Mapping[str, np.ndarray],
    class_ids: Sequence[int],
    class_names: Sequence[str],
    bins: int = 10,
) -> Path:
    """Reliability diagram per class: share of positives against mean probability per bin, one line per set.

    Args:
        path: PNG to write.
        labels: ``(N, C)`` bool truth.
        curves: name (e.g. ``uncalibrated``) -> ``(N, C)`` probabilities.
        class_ids: the ``C`` class ids.
        class_names: their names.
        bins: equal-width bins.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(class_ids), figsize=(3.4 * len(class_ids), 3.4), squeeze=False)
    for k, (class_id, name) in enumerate(zip(class_ids, class_names, strict=True)):
        ax = axes[0][k]
        ax.plot([0, 1], [0, 1], ":", color="gray", linewidth=1)
        for label, probabilities in curves.items():
            confidence, frequency, count = reliability_bins(probabilities[:, k], labels[:, k], bins)
            filled = count > 0
            ax.plot(confidence[filled], frequency[filled], "o-", markersize=3, label=label)
        ax.set_title(f"class {class_id} ({name})")
        ax.set_xlabel("mean probability")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        if k == 0:
            ax.set_ylabel("share of positives")
            ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _curve_lines(curve: GateCurve, marks: Mapping[str, tuple[GatePoint | None, HeldoutPoint]]) -> list[str]:
    budget = "none" if curve.max_runs_per_image is None else f"{curve.max_runs_per_image:g} runs/image"
    lines = [
        f"Gate tuned on {curve.images} images with cost weight λ = {curve.cost_weight:g} (objective Dice − λ·runs), "
        f"budget {budget}, minimum recall {curve.min_recall:g}, "
        f"{'calibrated' if curve.calibrated else 'uncalibrated'} probabilities.",
        "",
        "| point | runs/image (tuning) | Dice (tuning) | runs/image (held-out) | Dice (held-out) | images/s (est.) |",
        "|---|---|---|---|---|---|",
    ]
    for label, (tuned, held) in marks.items():
        lines.append(
            f"| {label} | {_fmt(tuned.runs_per_image if tuned else None)} | {_fmt(tuned.dice if tuned else None, 4)} "
            f"| {held[0]:.3f} | {held[1]:.4f} | {_fmt(held[2], 1)} |"
        )
    return lines


def gate_section(
    run_dir: Path, result: Evaluation, thresholds: Mapping[str, Any], summary: Mapping[str, Any]
) -> list[str]:
    """Write ``gate_curve.png`` and ``reliability.png`` into ``run_dir``; the report's gate section as lines.

    Args:
        run_dir: the run folder.
        result: the held-out evaluation.
        thresholds: ``thresholds.json`` of the run.
        summary: ``evaluation.json`` content (its ``gate`` entry).
    """
    gate = summary["gate"]
    class_ids = result.cascade.class_ids
    curve = GateCurve.from_dict(thresholds["gate_curve"]) if thresholds.get("gate_curve") else None
    measured: HeldoutPoint = (gate["runs_per_image"], result.cascade.mean, gate["images_per_second"]["cascade"])
    segment_all: HeldoutPoint = (
        float(len(class_ids)), result.segment_all.mean, gate["images_per_second"]["segment_all"],
    )  # fmt: skip
    marks: dict[str, tuple[GatePoint | None, HeldoutPoint]] = {"chosen": (curve.chosen if curve else None, measured)}
    heldout: list[HeldoutPoint] = []
    if curve is not None:
        grid = thresholds["grid"]
        if curve.dice_only != curve.chosen:
            marks["Dice-only"] = (curve.dice_only, heldout_point(curve.dice_only, curve, result, grid))
        heldout = [heldout_point(p, curve, result, grid) for p in curve.frontier]
    marks["segment_all"] = (None, segment_all)
    plot_gate_curve(run_dir / "gate_curve.png", curve, heldout, marks)
    lines = ["## Gate economics", ""]
    if curve is not None:
        lines += _curve_lines(curve, marks)
    else:
        lines.append(f"The gate ran {measured[0]:.3f} segmenters per held-out image (tuned without a gate curve).")
    lines += ["", "![gate curve](gate_curve.png)", "", *_class_lines(result, thresholds, gate, curve)]
    lines += ["", *_calibration_lines(run_dir, result, thresholds, gate)]
    if "ood" in summary:
        ood = summary["ood"]
        lines += [
            "## Out-of-distribution monitoring",
            "",
            f"{100 * ood['flagged_share']:.1f}% of the held-out images score above the bundle's out-of-distribution "
            f"threshold {ood['threshold']:.3f} (median score {ood['median_score']:.3f}); images like the training "
            "data should rarely be flagged.",
            "",
        ]
    return lines


def _class_lines(
    result: Evaluation, thresholds: Mapping[str, Any], gate: Mapping[str, Any], curve: GateCurve | None
) -> list[str]:
    lines = [
        "Per class on the held-out images: segmenter runs per image against the share of images that have the "
        "class (a gate that sends no more than 1.5x the positives is efficient), the gate's recall, and whether "
        "tuning found the class predictable.",
        "",
        "| class | gate threshold | runs/image | positive rate | runs / positives | recall | predictable | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, class_id in enumerate(result.cascade.class_ids):
        entry = gate["per_class"][str(class_id)]
        params = thresholds["classes"][str(class_id)]["params"]
        ratio = entry["pass_rate"] / entry["positive_rate"] if entry["positive_rate"] else None
        predictable = params.get("predictable", True)
        note = curve.classes[k].note if curve is not None else ""
        lines.append(
            f"| {class_id} {result.cascade.class_names[k]} | {params['prob_threshold']:.2f} | {entry['pass_rate']:.3f} "
            f"| {entry['positive_rate']:.3f} | {_fmt(ratio, 2)} | {_fmt(entry['recall'])} "
            f"| {'yes' if predictable else '**NO**'} | {note} |"
        )
    return lines


def _calibration_lines(
    run_dir: Path, result: Evaluation, thresholds: Mapping[str, Any], gate: Mapping[str, Any]
) -> list[str]:
    class_ids, class_names = result.cascade.class_ids, result.cascade.class_names
    tuned = thresholds.get("calibration") or {}
    if result.uncalibrated is None:
        plot_reliability(run_dir / "reliability.png", result.labels, {"bundle": result.probabilities}, class_ids,
                         class_names)  # fmt: skip
        return [
            "## Calibration",
            "",
            f"The bundle has no calibration; held-out expected calibration error {gate['ece']:.4f}.",
            "",
            "![reliability diagrams](reliability.png)",
            "",
        ]
    curves = {"uncalibrated": result.uncalibrated, "calibrated": result.probabilities}
    plot_reliability(run_dir / "reliability.png", result.labels, curves, class_ids, class_names)
    lines = [
        "## Calibration",
        "",
        "Per-class temperature and bias fitted on the tuning fold's out-of-fold probabilities; the gate thresholds "
        "and the probabilities the API returns are calibrated. Expected calibration error (10 bins):",
        "",
        f"- tuning fold: {_fmt(tuned.get('ece_before'), 4)} before, {_fmt(tuned.get('ece_after'), 4)} after",
        f"- held-out: {gate['ece_uncalibrated']:.4f} before, {gate['ece']:.4f} after",
        "",
        "| class | temperature | bias | ECE held-out before | after | ROC AUC tuning before | after |",
        "|---|---|---|---|---|---|---|",
    ]
    for class_id in class_ids:
        fit = tuned.get("classes", {}).get(str(class_id), {})
        held = gate["per_class"][str(class_id)]
        lines.append(
            f"| {class_id} | {_fmt(fit.get('temperature'))} | {_fmt(fit.get('bias'))} "
            f"| {held['ece_uncalibrated']:.4f} | {held['ece']:.4f} "
            f"| {_fmt(fit.get('auc_before'), 4)} | {_fmt(fit.get('auc_after'), 4)} |"
        )
    return [*lines, "", "![reliability diagrams](reliability.png)", ""]
