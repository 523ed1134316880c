"""CLI command ``cascade export``: write a bundle's networks as ONNX or OpenVINO IR for other runtimes."""

from __future__ import annotations

from pathlib import Path

import typer

from cascade.cli.common import bundle_error

__all__ = ["register"]

_FORMATS = ("onnx", "openvino")


def register(app: typer.Typer) -> None:
    """Add the ``export`` command to ``app``."""

    @app.command("export")
    def export(
        bundle: Path | None = typer.Argument(
            None, help="Bundle file (*.safetensors) or directory; the embedded demo bundle when omitted."
        ),
        fmt: str = typer.Option("onnx", "--format", "-f", help="Export format: onnx or openvino (IR xml+bin)."),
        out: Path = typer.Option(..., "--out", "-o", help="Output directory (created; files are overwritten)."),
    ) -> None:
        """Export the classifier and the four segmenters (with sigmoid) plus manifest.json into OUT.

        Networks take a normalised float32 'image' (N, 3, H, W), all but C dynamic, and return 'probs'.

        manifest.json says how to normalise and pad the input and how to post-process the output.
        """
        if fmt not in _FORMATS:
            raise typer.BadParameter(f"{fmt!r}; allowed: {', '.join(_FORMATS)}", param_hint="--format")
        from tqdm import tqdm

        from cascade.bundle import BundleError, load_bundle
        from cascade.embedded import resolve_bundle
        from cascade.export import export_onnx, export_openvino

        try:
            loaded = load_bundle(resolve_bundle(bundle))
        except BundleError as err:
            typer.echo(f"error: {bundle_error(bundle, err)}", err=True)
            raise typer.Exit(1) from err
        steps = (1 + len(loaded.segmenters)) * (2 if fmt == "openvino" else 1)
        with tqdm(total=steps, desc=f"export {fmt}", unit="net") as bar:

            def advance(key: str) -> None:
                bar.set_postfix_str(key)
                bar.update()

            writer = export_onnx if fmt == "onnx" else export_openvino
            files = writer(loaded, out, on_network=advance)
        for key, path in files.items():
            typer.echo(f"{key}: {path}")
