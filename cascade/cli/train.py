"""CLI command ``cascade train``: run the training pipeline of a recipe (``training.pipeline``)."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register"]

_STAGES = "classifier, hard_negatives, segmenter, tune, package, evaluate"


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
    stage: list[str] = typer.Option([], "--stage", "-s", help=f"Run only this stage (repeatable): {_STAGES}."),
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
    from training.pipeline import parse_overrides, run_pipeline
    from training.recipe import load_config

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


def register(app: typer.Typer) -> None:
    """Add ``train`` to ``app``."""
    app.command("train")(train)
