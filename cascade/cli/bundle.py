"""CLI commands: ``cascade bundle info [PATH]`` shows what a bundle holds; ``cascade bundle refit-ood`` refreshes its
out-of-distribution reference from its training images without retraining.

Other modules may add commands to the group through ``bundle_app`` (e.g. ``bundle export``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from cascade.cli.common import bundle_error
from cascade.gate_curve import describe_gate

__all__ = ["bundle_app", "format_info", "register"]

bundle_app = typer.Typer(
    name="bundle",
    help="Inspect trained cascade bundles (*.cascade.safetensors files or bundle directories).",
    no_args_is_help=True,
)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "), sort_keys=True)


def _size(path: Path) -> str:
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    total = sum(p.stat().st_size for p in files)
    return f"{total / 1e6:.1f} MB"


def _ensemble(spec: Any) -> str:
    return f" x{spec.members} averaged on {spec.average}" if spec.members > 1 else ""


def format_info(path: Path, manifest: Any, summary: dict[str, dict[str, Any]]) -> str:
    """Readable multi-line description of a bundle's manifest and weights."""

    def weights(group: str) -> str:
        entry = summary.get(group)
        if entry is None:
            return "no weights"
        return f"{entry['numel']:,} parameters, {entry['tensors']} tensors ({'/'.join(entry['dtypes'])})"

    form = "directory" if path.is_dir() else "single file"
    policy = manifest.input_policy
    norm = manifest.normalization
    lines = [
        f"Bundle:         {path} ({form}, {_size(path)})",
        f"Format version: {manifest.format_version}",
        f"Classifier:     {manifest.classifier.arch} {manifest.classifier.name} "
        f"{_compact(manifest.classifier.kwargs)}{_ensemble(manifest.classifier)} - {weights('classifier')}",
        "Segmenters:",
    ]
    for cid, name in zip(manifest.class_ids, manifest.class_names, strict=True):
        spec = manifest.segmenters[cid]
        lines.append(
            f"  {cid} {name:<16} {spec.arch} {spec.name} {_compact(spec.kwargs)}{_ensemble(spec)} "
            f"- {weights(f'segmenter.{cid}')}"
        )
    lines += [
        f"Normalization:  mean {norm.mean}, std {norm.std} (on RGB/255)",
        f"Input policy:   mode={policy.mode} stride={policy.stride} scale={policy.scale}"
        + (f" scale_x={policy.scale_x}" if policy.scale_x is not None else "")
        + (f" tile_width={policy.tile_width} tile_overlap={policy.tile_overlap}" if policy.mode == "tile" else ""),
        f"TTA:            {', '.join(manifest.tta) or 'none'}",
        "Classes:",
        f"  {'id':<3}{'name':<17}{'prob_thr':>9}{'pixel_thr':>10}{'min_area':>10}{'min_comp':>10}  soft_gate",
    ]
    for cid, name, params in zip(manifest.class_ids, manifest.class_names, manifest.classes, strict=True):
        gate = "closed" if params.closed else f"{params.prob_threshold:.3f}"  # a closed gate never opens
        lines.append(
            f"  {cid:<3}{name:<17}{gate:>9}{params.pixel_threshold:>10.3f}"
            f"{params.min_area:>10}{params.min_component_area:>10}  {params.soft_gate}"
        )
    lines += describe_gate(manifest)
    ood = manifest.ood
    if ood is None:
        lines.append("OOD reference:  none (predictions carry no ood_score)")
    else:
        lines.append(
            f"OOD reference:  {len(ood.features)} statistics ({', '.join(ood.features)}) of {ood.images} training "
            f"images, threshold {ood.threshold:.3f}" + ("" if ood.scale_below else " (one spread for both sides)")
        )
    lines.append("Provenance:")
    if not manifest.provenance:
        lines.append("  (none)")
    for key, value in manifest.provenance.items():
        lines.append(f"  {key + ':':<14}{value if isinstance(value, str) else _compact(value)}")
    return "\n".join(lines)


@bundle_app.command("info")
def info(
    path: Path | None = typer.Argument(
        None, help="Bundle file or directory; defaults to the embedded demo bundle.", show_default=False
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the raw manifest JSON instead of text."),
) -> None:
    """Print a bundle's manifest (models, thresholds, input policy, provenance) and weight sizes."""
    from cascade.bundle import BundleError, read_manifest, weights_summary
    from cascade.embedded import resolve_bundle

    try:
        resolved = resolve_bundle(path)
        manifest = read_manifest(resolved)
        summary = {} if as_json else weights_summary(resolved)
    except BundleError as err:
        typer.echo(f"error: {bundle_error(path, err)}", err=True)
        raise typer.Exit(code=1) from err
    typer.echo(manifest.to_json() if as_json else format_info(resolved, manifest, summary))


def _training_images(data: Path, split: str | None, manifest: Any) -> tuple[Path, list[str]]:
    """The images folder and image ids of ``data``: a folder of images, or labelled data (``split`` of a VOC set)."""
    from cascade.datasource import open_labelled
    from cascade.scoring.folder import list_images

    if split is None and data.is_dir() and (names := list_images(data)):
        return data, names
    labelled = open_labelled(data, classes=manifest.class_set, split=split, require_masks=False)
    return labelled.images_dir, list(labelled.annotations.image_ids)


@bundle_app.command("refit-ood")
def refit_ood(
    path: Path | None = typer.Argument(
        None, help="Bundle file or directory, or a shipped bundle's name; defaults to the demo.", show_default=False
    ),
    data: Path = typer.Option(
        ..., "--data", exists=True, help="The bundle's training images: a folder of images or labelled data."
    ),
    split: str | None = typer.Option(None, "--split", help="Use only this split of --data (VOC, e.g. train)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Bundle to write (default: over the input bundle)."),
    max_images: int = typer.Option(2000, "--max-images", min=2, help="Evenly spaced images the reference uses."),
) -> None:
    """Refit a bundle's out-of-distribution reference (cascade.ood) on its training images, without retraining.

    Everything else (weights, thresholds, calibration, provenance) is copied unchanged.
    """
    import dataclasses

    from cascade.bundle import BundleError, read_manifest, replace_manifest
    from cascade.datasource import DataSourceError
    from cascade.embedded import resolve_bundle
    from cascade.ood import fit_reference_on_images

    try:
        resolved = resolve_bundle(path)
        manifest = read_manifest(resolved)
        images_dir, image_ids = _training_images(data, split, manifest)
        reference = fit_reference_on_images(images_dir, image_ids, max_images=max_images, show_progress=True)
        written = replace_manifest(resolved, dataclasses.replace(manifest, ood=reference), out)
    except (BundleError, DataSourceError, ValueError) as err:
        typer.echo(f"error: {bundle_error(path, err) if isinstance(err, BundleError) else err}", err=True)
        raise typer.Exit(code=1) from err
    typer.echo(
        f"{written}: out-of-distribution reference refitted on {reference.images} of {len(image_ids)} images in "
        f"{images_dir} ({len(reference.features)} statistics, threshold {reference.threshold:.3f})"
    )


def register(app: typer.Typer) -> None:
    """Add the ``bundle`` command group to ``app``."""
    app.add_typer(bundle_app, name="bundle")
