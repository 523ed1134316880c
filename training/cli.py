"""CLI commands ``cascade train`` (the training pipeline of a recipe, ``training.pipeline``) and
``cascade evaluate`` (score a bundle on labelled images, optionally drawing its error gallery).

Registered from here, not from ``cascade.cli`` (the core never imports ``training``): the project's
``steel_cascade.commands`` entry points ``train = "training.cli:register"`` and
``evaluate = "training.cli:register_evaluate"`` hand ``register``/``register_evaluate`` the ``cascade`` app. Only
typer and the stage registry (``training.pipeline``, which loads no torch) load at ``cascade --help``; the stages
load when a command runs.

At the end ``cascade train`` prints where everything went and, when the evaluation ran, the held-out Kaggle Dice of the
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

from training.paths import RunPaths
from training.pipeline import STAGE_NAMES

__all__ = ["NO_BETTER_MARGIN", "evaluate", "heldout_summary", "register", "register_evaluate", "spread", "train"]

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
        [], "--stage", "-s", help=f"Run only this stage (repeatable): {', '.join(STAGE_NAMES)}."
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
    unlabelled: Path | None = typer.Option(
        None,
        "--unlabelled",
        "-u",
        file_okay=False,
        help="Folder of unlabelled images for the pseudo_label stage (overrides pseudo_label.unlabelled; with it, "
        "a run of every stage ends with pseudo-labelling rounds).",
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
        if unlabelled is not None:
            values["pseudo_label.unlabelled"] = str(unlabelled)
        recipe = load_config(config, values)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if "pseudo_label" in stage and recipe.pseudo_label.unlabelled is None:
        raise typer.BadParameter("the pseudo_label stage needs --unlabelled DIR (or pseudo_label.unlabelled)")
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
    report = RunPaths(result.run_dir).report_md
    if report.is_file():
        print(f"report: {report}")
    pseudo = RunPaths(result.run_dir).pseudo_report_md
    if pseudo.is_file() and (not stage or "pseudo_label" in stage):
        chosen = json.loads(RunPaths(result.run_dir).pseudo_summary_json.read_text())["chosen_round"]
        print(f"pseudo-labelling report: {pseudo} (bundle of round {chosen}; round 0 = no pseudo-labels)")
    if result.installed is not None:
        print(f"installed embedded bundle {recipe.package.embedded_name!r}: {result.installed}")
    evaluation = RunPaths(result.run_dir).evaluation_json
    evaluated = not stage or "evaluate" in stage
    if evaluated and evaluation.is_file() and os.environ.get("RANK", "0") == "0":
        lines, warning = heldout_summary(json.loads(evaluation.read_text()))
        print("\n".join(lines))
        if warning is not None:
            rule = "!" * 100
            typer.secho(f"{rule}\n{warning}\n{rule}", err=True, fg=typer.colors.RED, bold=True)


def spread(image_ids: tuple[str, ...], limit: int | None) -> tuple[str, ...]:
    """At most ``limit`` of ``image_ids``, evenly spread over them (deterministic), in their order."""
    if limit is None or limit >= len(image_ids):
        return image_ids
    import numpy as np

    picks = np.unique(np.linspace(0, len(image_ids) - 1, limit).round().astype(int))
    return tuple(image_ids[i] for i in picks)


def parse_tta(text: str | None) -> tuple[str, ...] | None:
    """``--tta`` as the predictor takes it: None (the bundle's own) for no option, ``()`` for ``none``, else the
    comma-separated names (checked by the predictor against ``cascade.manifest.TTA_OPS``)."""
    if text is None:
        return None
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    return () if names in ((), ("none",)) else names


def evaluate(
    bundle: str = typer.Argument(..., help="Bundle file or folder, or a shipped bundle's name (demo, neu-seg)."),
    data: Path = typer.Option(
        ...,
        "--data",
        "-d",
        exists=True,
        help="Labelled images, auto-detected: a Kaggle CSV folder (train.csv + train_images/), a Pascal VOC set "
        "(JPEGImages/ + SegmentationClass/) or a mask folder (images/ + masks/).",
    ),
    split: str | None = typer.Option(None, "--split", help="Score only this split of the data (VOC ImageSets)."),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Score at most N images, spread evenly over the set."
    ),
    skip_unlabelled: bool = typer.Option(
        False,
        "--skip-unlabelled",
        help="Mask folders: leave out images that have no mask instead of stopping (how many is printed).",
    ),
    gallery: Path | None = typer.Option(
        None,
        "--gallery",
        file_okay=False,
        help="Write the error gallery here: the worst images by Dice and every false-positive clean image, "
        "image | truth | prediction with a legend and per-class probabilities (index.md, gallery.json, PNGs).",
    ),
    worst: int = typer.Option(12, "--worst", min=0, help="Worst images by Dice drawn in the gallery."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images per predictor call."),
    device: str = typer.Option("cpu", "--device", help="Torch device: cpu, cuda, cuda:1."),
    json_out: Path | None = typer.Option(None, "--json", dir_okay=False, help="Also write the summary as JSON."),
    tta: str | None = typer.Option(
        None,
        "--tta",
        help="Test-time augmentations instead of the bundle's: comma-separated flips (hflip, vflip, hflip,vflip), "
        "or none. Default: the bundle's own.",
    ),
) -> None:
    """Score a bundle on labelled images (Kaggle Dice); --gallery draws its worst images.

    Prints the Kaggle Dice of the cascade, segment_all and all-empty, overall and per class; with --gallery,
    draws the worst images by Dice and every false positive on a clean image.

    Example: `cascade evaluate neu-seg --data ../shared/neu-seg --split val --limit 100 --gallery runs/gallery`.
    """
    from cascade.bundle import BundleError, read_manifest
    from cascade.datasource import DataSourceError, open_labelled
    from cascade.embedded import resolve_bundle

    try:
        from training.evaluate import evaluate_bundle
        from training.gallery import write_gallery
    except ModuleNotFoundError as exc:
        typer.echo(f"error: cascade evaluate needs {exc.name!r}: pip install 'steel-cascade[train]'", err=True)
        raise typer.Exit(1) from exc
    try:
        path = resolve_bundle(bundle)
        classes = read_manifest(path).class_set
        labelled = open_labelled(data, classes=classes, require_masks=not skip_unlabelled)
        if split is not None:
            labelled = labelled.split(split)
    except (BundleError, OSError, DataSourceError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    annotations = labelled.annotations.subset(spread(labelled.image_ids, limit))
    flips = parse_tta(tta)
    try:
        result = evaluate_bundle(
            path, labelled.images_dir, annotations, grid=([0.5], [0.5], [0]), batch_size=batch_size, device=device,
            tta=flips,
        )  # fmt: skip
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    where = f"{labelled.kind} {labelled.root}" + (f", split {split}" if split else "")
    summary = {"data": f"{where}, {len(annotations)} images", "bundle": str(path), **result.to_dict()}
    if flips is not None:
        summary["tta"] = list(flips)
        summary["data"] += f", TTA {', '.join(flips) or 'none'}"
    print(f"Kaggle Dice on {summary['data']}:")
    names = "  ".join(f"{c} {n}" for c, n in zip(classes.ids, classes.names, strict=True))
    print(f"  {'':<12} {'mean':>7}   per class ({names})")
    for label, report in (
        ("cascade", result.cascade),
        ("segment_all", result.segment_all),
        ("all-empty", result.empty),
    ):
        print(f"  {label:<12} {report.mean:7.4f}   " + "  ".join(f"{v:.4f}" for v in report.per_class))
    if json_out is not None:
        json_out.write_text(json.dumps(summary, indent=2))
        print(f"summary: {json_out}")
    if gallery is not None:
        cases = write_gallery(
            gallery, path, labelled.images_dir, annotations, result.image_dice, result.labels,
            worst=worst, device=device, batch_size=batch_size, tta=flips,
        )  # fmt: skip
        kinds = [c.kind for c in cases]
        print(
            f"gallery: {gallery / 'index.md'} ({kinds.count('worst')} worst images, "
            f"{kinds.count('clean_fp')} false positives on clean images)"
        )


def register(app: typer.Typer) -> None:
    """Add ``train`` to ``app``."""
    app.command("train")(train)


def register_evaluate(app: typer.Typer) -> None:
    """Add ``evaluate`` to ``app``."""
    app.command("evaluate")(evaluate)
