"""CLI commands: ``cascade bundle info [PATH]`` shows what a bundle holds.

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
        + (f" tile_width={policy.tile_width} tile_overlap={policy.tile_overlap}" if policy.mode == "tile" else ""),
        f"TTA:            {', '.join(manifest.tta) or 'none'}",
        "Classes:",
        f"  {'id':<3}{'name':<17}{'prob_thr':>9}{'pixel_thr':>10}{'min_area':>10}{'min_comp':>10}  soft_gate",
    ]
    for cid, name, params in zip(manifest.class_ids, manifest.class_names, manifest.classes, strict=True):
        lines.append(
            f"  {cid:<3}{name:<17}{params.prob_threshold:>9.3f}{params.pixel_threshold:>10.3f}"
            f"{params.min_area:>10}{params.min_component_area:>10}  {params.soft_gate}"
        )
    lines += describe_gate(manifest)
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


def register(app: typer.Typer) -> None:
    """Add the ``bundle`` command group to ``app``."""
    app.add_typer(bundle_app, name="bundle")
