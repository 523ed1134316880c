"""The evaluation report: ``report.md`` with PNG plots (matplotlib, Agg backend).

Plots: threshold sweeps per class (Dice against each tuned parameter with the other two at their chosen
values, on the tuning fold and on the held-out images), per-class Dice of cascade / segment-all /
all-empty, and the gate's confusion matrix per class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cascade.constants import CLASS_IDS, CLASS_NAMES
from cascade.manifest import ClassParams
from training.config import PipelineConfig
from training.gate_report import gate_section

if TYPE_CHECKING:
    from training.evaluate import Evaluation

__all__ = ["plot_confusion", "plot_per_class", "plot_sweeps", "write_report"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_sweeps(
    path: Path,
    grid: Mapping[str, Sequence[float]],
    chosen: Sequence[ClassParams],
    curves: Mapping[str, Mapping[int, np.ndarray]],
    class_ids: Sequence[int] = CLASS_IDS,
    class_names: Sequence[str] = CLASS_NAMES,
) -> Path:
    """Dice against each parameter, per class, through the chosen point.

    Args:
        path: PNG to write.
        grid: ``prob_thresholds``, ``pixel_thresholds``, ``min_areas``.
        chosen: tuned parameters per class.
        curves: label (e.g. ``validation``) -> class id -> ``(T, P, M)`` grid scores.
    """
    plt = _pyplot()
    axes_names = (("prob_thresholds", "probability threshold"), ("pixel_thresholds", "pixel threshold"),
                  ("min_areas", "min area (px)"))  # fmt: skip
    class_ids, class_names = tuple(class_ids), tuple(class_names)
    fig, axes = plt.subplots(3, len(class_ids), figsize=(4 * len(class_ids), 9), squeeze=False)
    for k, class_id in enumerate(class_ids):
        params = chosen[k]
        point = (
            list(grid["prob_thresholds"]).index(params.prob_threshold),
            list(grid["pixel_thresholds"]).index(params.pixel_threshold),
            list(grid["min_areas"]).index(params.min_area),
        )
        for row, (key, label) in enumerate(axes_names):
            ax = axes[row][k]
            for name, scores in curves.items():
                index: list[Any] = list(point)
                index[row] = slice(None)
                ax.plot(grid[key], scores[class_id][tuple(index)], marker="o", markersize=3, label=name)
            ax.axvline(grid[key][point[row]], color="gray", linestyle=":", linewidth=1)
            ax.set_xlabel(label)
            if row == 0:
                ax.set_title(f"class {class_id} ({class_names[k]})")
            if k == 0:
                ax.set_ylabel("class Dice")
            ax.grid(alpha=0.3)
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_per_class(
    path: Path,
    reports: Mapping[str, Sequence[float]],
    class_ids: Sequence[int] = CLASS_IDS,
    class_names: Sequence[str] = CLASS_NAMES,
) -> Path:
    """Grouped bars of per-class Dice (and the mean) for each named result (cascade, segment_all, empty)."""
    plt = _pyplot()
    labels = [f"{c} {n}" for c, n in zip(class_ids, class_names, strict=True)] + ["mean"]
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(reports))
    fig, ax = plt.subplots(figsize=(9, 4))
    for i, (name, values) in enumerate(reports.items()):
        ax.bar(x + (i - (len(reports) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, labels)
    ax.set_ylim(min(0.5, min(min(v) for v in reports.values()) - 0.05), 1.0)
    ax.set_ylabel("Dice")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_confusion(path: Path, labels: np.ndarray, decisions: np.ndarray, class_ids: Sequence[int] = CLASS_IDS) -> Path:
    """The gate's 2x2 confusion matrix per class (rows: truth absent/present; columns: gate closed/open)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(class_ids), figsize=(3.2 * len(class_ids), 3.2), squeeze=False)
    for k, class_id in enumerate(class_ids):
        y, d = labels[:, k].astype(bool), decisions[:, k].astype(bool)
        matrix = np.array([[np.sum(~y & ~d), np.sum(~y & d)], [np.sum(y & ~d), np.sum(y & d)]])
        ax = axes[0][k]
        ax.imshow(matrix, cmap="Blues")
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, str(value), ha="center", va="center", color="black")
        ax.set_xticks([0, 1], ["closed", "open"])
        ax.set_yticks([0, 1], ["absent", "present"])
        ax.set_title(f"class {class_id}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _row(name: str, mean: float, per_class: Sequence[float]) -> str:
    return f"| {name} | **{mean:.4f}** | " + " | ".join(f"{v:.4f}" for v in per_class) + " |"


def write_report(
    run_dir: Path,
    config: PipelineConfig,
    summary: Mapping[str, Any],
    validation: Mapping[str, Any],
    classes: Sequence[ClassParams],
    result: Evaluation,
    thresholds: Mapping[str, Any],
) -> Path:
    """Write ``report.md`` and its plots into ``run_dir``; returns the report's path."""
    grid = thresholds["grid"]
    class_ids, class_names = result.cascade.class_ids, result.cascade.class_names
    curves: dict[str, dict[int, np.ndarray]] = {"held-out": result.grid_scores}
    tune_path = run_dir / "tune_scores.npz"
    if tune_path.is_file():
        with np.load(tune_path) as data:
            curves = {"validation": {c: data[f"class{c}"] for c in class_ids}, **curves}
    plot_sweeps(run_dir / "sweeps.png", grid, classes, curves, class_ids, class_names)
    per_class = {
        "cascade": [*result.cascade.per_class, result.cascade.mean],
        "segment_all": [*result.segment_all.per_class, result.segment_all.mean],
        "all-empty": [*result.empty.per_class, result.empty.mean],
    }
    plot_per_class(run_dir / "per_class_dice.png", per_class, class_ids, class_names)
    plot_confusion(run_dir / "confusion.png", result.labels, result.gate, class_ids)
    header = "| | mean | " + " | ".join(f"{c} {n}" for c, n in zip(class_ids, class_names, strict=True)) + " |"
    rule = "|---|---|" + "---|" * len(class_ids)
    clf = summary["classifier"]
    lines = [
        f"# Evaluation report: {config.name}",
        "",
        f"Held-out data: {summary['data']} ({summary['images']} images).",
        "",
        "## Kaggle Dice (held-out)",
        "",
        header,
        rule,
        _row("cascade", result.cascade.mean, result.cascade.per_class),
        _row("segment_all", result.segment_all.mean, result.segment_all.per_class),
        _row("all-empty baseline", result.empty.mean, result.empty.per_class),
        "",
        f"The gate sent {100 * summary['segmenter_share']:.1f}% of (image, class) pairs to a segmenter.",
        "",
        f"Tuning fold ({validation['images']} images): cascade {validation['dice_cascade']:.4f}, "
        f"segment_all {validation['dice_segment_all']:.4f}, all-empty {validation['dice_empty']:.4f}.",
        "",
        "![per-class Dice](per_class_dice.png)",
        "",
        "## Classifier (held-out)",
        "",
        "| class | positives | ROC AUC | F1 at the gate threshold |",
        "|---|---|---|---|",
        *(
            f"| {c} | {clf[str(c)]['positives']} | {clf[str(c)]['auc']:.4f} | {clf[str(c)]['f1']:.4f} |"
            for c in class_ids
        ),
        "",
        "![gate confusion matrices](confusion.png)",
        "",
        "## Tuned post-processing",
        "",
        "| class | probability threshold | pixel threshold | min area |",
        "|---|---|---|---|",
        *(
            f"| {c} | {p.prob_threshold:.2f} | {p.pixel_threshold:.2f} | {p.min_area} |"
            for c, p in zip(class_ids, classes, strict=True)
        ),
        "",
        "Threshold sweeps (each parameter varied with the other two at their chosen values):",
        "",
        "![threshold sweeps](sweeps.png)",
        "",
        *gate_section(run_dir, result, thresholds, summary),
    ]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
