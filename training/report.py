"""The evaluation report: ``report.md`` with PNG plots (matplotlib, Agg backend).

Plots: threshold sweeps per class (Dice against each tuned parameter with the other two at their chosen
values, on the tuning fold and on the held-out images; the y axis spans at least ``MIN_DICE_SPAN`` so a
0.002 wiggle looks like one), per-class Dice of cascade / segment-all / all-empty, the gate's confusion
matrix per class (counts on the cells, truth absent/present against gate closed/open), and the loss curves
of every classifier fold and segmenter from their ``metrics.csv``. A classifier AUC is given only with at
least ``MIN_AUC_LABELS`` positive and negative held-out images ("n/a" otherwise). When the evaluate stage drew
an error gallery (``training.gallery``), the report links it and shows its first images.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cascade.constants import CLASS_IDS, CLASS_NAMES
from cascade.manifest import ClassParams
from training.config import PipelineConfig
from training.evaluation import Evaluation
from training.gallery import gallery_section
from training.gate_report import gate_section
from training.paths import METRICS_FILE, RunPaths

__all__ = [
    "MIN_AUC_LABELS",
    "MIN_DICE_SPAN",
    "format_auc",
    "plot_confusion",
    "plot_loss_curves",
    "plot_per_class",
    "plot_sweeps",
    "write_report",
]

MIN_DICE_SPAN = 0.1
"""Smallest y range of a Dice axis in the sweeps: differences of a few thousandths stay visually small."""

MIN_AUC_LABELS = 2
"""Positives and negatives (each) a class needs on the held-out images for its ROC AUC to be reported."""


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
            ax.set_ylim(*_dice_limits([ln.get_ydata() for ln in ax.get_lines()]))
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


def _dice_limits(series: Sequence[Any]) -> tuple[float, float]:
    """y limits covering ``series`` and spanning at least ``MIN_DICE_SPAN``, inside [0, 1] where possible."""
    values = np.concatenate([np.asarray(v, dtype=float).ravel() for v in series]) if series else np.zeros(0)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    pad = max(0.0, MIN_DICE_SPAN - (high - low)) / 2 + 0.01
    low, high = low - pad, high + pad
    if high > 1.0:
        low, high = low - (high - 1.0), 1.0
    if low < 0.0:
        low, high = 0.0, max(high - low, high)
    return low, high


def plot_confusion(
    path: Path,
    labels: np.ndarray,
    decisions: np.ndarray,
    class_ids: Sequence[int] = CLASS_IDS,
    class_names: Sequence[str] | None = None,
) -> Path:
    """The gate's 2x2 confusion matrix per class: rows truth (absent/present), columns gate (closed/open).

    Args:
        path: PNG to write.
        labels: ``(N, C)`` bool truth.
        decisions: ``(N, C)`` bool gate decisions.
        class_ids: the C class ids.
        class_names: their names (titles).
    """
    plt = _pyplot()
    names = tuple(class_names) if class_names is not None else tuple("" for _ in class_ids)
    fig, axes = plt.subplots(1, len(class_ids), figsize=(3.4 * len(class_ids), 3.6), squeeze=False)
    for k, class_id in enumerate(class_ids):
        y, d = labels[:, k].astype(bool), decisions[:, k].astype(bool)
        matrix = np.array([[np.sum(~y & ~d), np.sum(~y & d)], [np.sum(y & ~d), np.sum(y & d)]])
        ax = axes[0][k]
        ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(1, int(matrix.max())))
        for (i, j), value in np.ndenumerate(matrix):
            dark = value > matrix.max() / 2
            ax.text(j, i, f"{value}", ha="center", va="center", fontsize=14, fontweight="bold",
                    color="white" if dark else "black")  # fmt: skip
        ax.set_xticks([0, 1], ["closed", "open"])
        ax.set_yticks([0, 1], ["absent", "present"])
        ax.set_xlabel("gate (segmenter run)")
        if k == 0:
            ax.set_ylabel("truth")
        ax.set_title(f"class {class_id} {names[k]}".strip())
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _read_metrics(path: Path) -> dict[str, np.ndarray]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    columns: dict[str, np.ndarray] = {}
    for key in rows[0] if rows else ():
        try:
            columns[key] = np.array([float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows])
        except ValueError:
            continue
    return columns


def plot_loss_curves(path: Path, run_dir: Path) -> Path | None:
    """Training loss (top) and the first validation metric (bottom) per epoch of every classifier fold and
    segmenter, from ``RUN_DIR/{classifier,segmenter}/*/metrics.csv``; None when there are none."""
    paths = RunPaths(run_dir)
    groups = {
        group: {p.parent.name: _read_metrics(p) for p in sorted(folder.glob(f"*/{METRICS_FILE}"))}
        for group, folder in (("classifier", paths.classifier_dir), ("segmenter", paths.segmenter_dir))
    }
    groups = {g: {k: m for k, m in runs.items() if "epoch" in m and "train_loss" in m} for g, runs in groups.items()}
    groups = {g: runs for g, runs in groups.items() if runs}
    if not groups:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(groups), figsize=(6 * len(groups), 6.5), squeeze=False)
    for col, (group, runs) in enumerate(groups.items()):
        top, bottom = axes[0][col], axes[1][col]
        val_key = next((k for m in runs.values() for k in m if k.startswith("val_")), None)
        for name, metrics in runs.items():
            top.plot(metrics["epoch"], metrics["train_loss"], marker="o", markersize=3, label=name)
            if val_key is not None and val_key in metrics:
                ok = np.isfinite(metrics[val_key])
                bottom.plot(metrics["epoch"][ok], metrics[val_key][ok], marker="o", markersize=3, label=name)
        top.set_title(f"{group}: training loss")
        top.set_ylabel("loss")
        top.legend(fontsize=7)
        bottom.set_title(f"{group}: {val_key or 'no validation metric'}")
        bottom.set_xlabel("epoch")
        if val_key is not None:
            bottom.set_ylabel(val_key.removeprefix("val_"))
            bottom.legend(fontsize=7)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def format_auc(auc: float, positives: int, images: int) -> str:
    """ROC AUC as text, or ``n/a`` with the reason when positives or negatives are fewer than ``MIN_AUC_LABELS``."""
    negatives = images - positives
    if positives < MIN_AUC_LABELS or negatives < MIN_AUC_LABELS or not np.isfinite(auc):
        return f"n/a ({positives} positive, {negatives} negative)"
    return f"{auc:.4f}"


def _describe_data(description: str, images: int) -> str:
    """The held-out data's description, with its image count unless the description already gives it."""
    return description if f"{images} images" in description else f"{description} ({images} images)"


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
    tune_path = RunPaths(run_dir).tune_scores_npz
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
    plot_confusion(run_dir / "confusion.png", result.labels, result.gate, class_ids, class_names)
    losses = plot_loss_curves(run_dir / "loss_curves.png", run_dir)
    header = "| | mean | " + " | ".join(f"{c} {n}" for c, n in zip(class_ids, class_names, strict=True)) + " |"
    rule = "|---|---|" + "---|" * len(class_ids)
    clf = summary["classifier"]
    lines = [
        f"# Evaluation report: {config.name}",
        "",
        f"Held-out data: {_describe_data(summary['data'], summary['images'])}.",
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
            f"| {c} | {clf[str(c)]['positives']} | "
            f"{format_auc(clf[str(c)]['auc'], clf[str(c)]['positives'], summary['images'])} | "
            f"{clf[str(c)]['f1']:.4f} |"
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
        *(["## Training curves", "", "![loss curves](loss_curves.png)", ""] if losses is not None else []),
        *gate_section(run_dir, result, thresholds, summary),
        *gallery_section(run_dir),
    ]
    path = RunPaths(run_dir).report_md
    path.write_text("\n".join(lines))
    return path
