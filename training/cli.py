"""CLI command ``cascade train``: run the training pipeline of a recipe (``training.pipeline``).

Registered from here, not from ``cascade.cli`` (the core never imports ``training``): the project's
``steel_cascade.commands`` entry point ``train = "training.cli:register"`` hands ``register`` the ``cascade``
app. Only typer and ``training.config`` load at ``cascade --help``; the pipeline loads when the command runs.

At the end it prints where everything went and, when the evaluation ran, the held-out Kaggle Dice of the
cascade next to the all-empty and ``segment_all`` baselines (``RUN_DIR/evaluation.json``), with a loud
warning when the cascade does not beat predicting nothing by ``NO_BETTER_MARGIN``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer

from training.config import STAGES

__all__ = ["NO_BETTER_MARGIN", "heldout_summary", "register", "train"]

NO_BETTER_MARGIN = 0.01
"""Held-out mean Dice the cascade must gain over the all-empty baseline not to be called "no better"."""


def heldout_summary(evaluation: Mapping[str, Any]) -> tuple[list[str], str | None]:
    """Lines comparing the cascade with its baselines on the held-out images, and a warning or None.

    Args:
        evaluation: the contents of ``RUN_DIR/evaluation.json``.
    """
    cascade, empty, seg_all = (float(evaluation[k]) for k in ("dice_cascade", "dice_empty", "dice_segment_all"))
    per_cascade = evaluation.get("cascade", {}).get("per_class", {})
    per_empty = evaluation.get("empty", {}).get("per_class", {})
    classes = ", ".join(f"{c}: {float(v):.3f}" for c, v in per_cascade.items())
    lines = [
        f"held-out Kaggle Dice ({evaluation.get('data', '?')}):",
        f"  cascade      {cascade:.4f}" + (f"   per class {classes}" if classes else ""),
        f"  all-empty    {empty:.4f}   (predicting nothing)",
        f"  segment_all  {seg_all:.4f}   (every segmenter on every image, no gate)",
    ]
    worse = [c for c, v in per_cascade.items() if c in per_empty and float(v) < float(per_empty[c]) - 1e-9]
    if cascade - empty >= NO_BETTER_MARGIN:
        return lines, None
    warning = (
        f"WARNING: the cascade is no better than predicting nothing on the held-out images: {cascade:.4f} vs "
        f"all-empty {empty:.4f} ({cascade - empty:+.4f}; at least +{NO_BETTER_MARGIN} expected). "
        + (f"Classes below all-empty: {', '.join(worse)}. " if worse else "")
        + "Train longer or on more data, and check report.md; do not ship this bundle."
    )
    return lines, warning


def train(
    config: Path = typer.Option(
        ..., "--config", "-c", exists=True, dir_okay=False, help="Recipe YAML, e.g. configs/demo-cpu.yaml."
    ),
    data: Path | None = typer.Option(
        None,
        "--data",
        "-d",
        help="Training data, auto-detected: a Kaggle CSV folder (train.csv + train_images/), a Pascal VOC set "
        "(JPEGImages/ + SegmentationClass/) or a mask folder (images/ + masks/); overrides the recipe's data.dir.",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", file_okay=False, help="Run folder (default: the recipe's 'out')."
    ),
    stage: list[str] = typer.Option(
        [], "--stage", "-s", help=f"Run only this stage (repeatable): {', '.join(STAGES)}."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Skip finished stages and continue interrupted training from its last checkpoint."
    ),
    install_embedded: bool = typer.Option(
        False,
        "--install-embedded",
        help="Ship the resulting bundle in the package under the recipe's package.embedded_name (default demo).",
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a recipe value, e.g. --set classifier.train.epochs=2 (repeatable)."
    ),
) -> None:
    """Train the cascade: classifier folds, hard negatives, segmenters, thresholds, bundle, evaluation report.

    Multi-GPU / multi-node: launch the same command under torchrun, e.g.
    `torchrun --nproc_per_node=4 -m cascade.cli.main train --config configs/severstal-gpu.yaml`.
    """
    from cascade.datasource import DataSourceError

    try:  # torch, matplotlib, pandas: the pipeline's own imports, some from the 'train' extra
        from training.pipeline import parse_overrides, run_pipeline
        from training.recipe import load_config
    except ModuleNotFoundError as exc:
        typer.echo(
            f"error: cascade train needs {exc.name!r}: install the training extra, pip install 'steel-cascade[train]'",
            err=True,
        )
        raise typer.Exit(1) from exc

    try:
        values = parse_overrides(overrides)
        if data is not None:
            values["data.dir"] = str(data)
        recipe = load_config(config, values)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        result = run_pipeline(recipe, out, stages=stage or None, resume=resume, install_embedded=install_embedded)
    except (FileNotFoundError, DataSourceError) as exc:  # missing/bad data or an earlier stage's output: no traceback
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    for name, seconds in result.seconds.items():
        print(f"{name:<15} {seconds:8.1f} s")
    print(f"run folder: {result.run_dir}")
    if result.bundle is not None:
        print(f"bundle: {result.bundle}")
    report = result.run_dir / "report.md"
    if report.is_file():
        print(f"report: {report}")
    if result.installed is not None:
        print(f"installed embedded bundle {recipe.package.embedded_name!r}: {result.installed}")
    evaluation = result.run_dir / "evaluation.json"
    evaluated = not stage or "evaluate" in stage
    if evaluated and evaluation.is_file() and os.environ.get("RANK", "0") == "0":
        lines, warning = heldout_summary(json.loads(evaluation.read_text()))
        print("\n".join(lines))
        if warning is not None:
            rule = "!" * 100
            typer.secho(f"{rule}\n{warning}\n{rule}", err=True, fg=typer.colors.RED, bold=True)


def register(app: typer.Typer) -> None:
    """Add ``train`` to ``app``."""
    app.command("train")(train)
