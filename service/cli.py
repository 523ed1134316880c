"""CLI command ``cascade serve``: the FastAPI service under uvicorn.

Registered from here, not from ``cascade.cli`` (the core never imports ``service``): the project's
``steel_cascade.commands`` entry point ``serve = "service.cli:register"`` hands ``register`` the ``cascade``
app. Only typer loads at ``cascade --help``; FastAPI, uvicorn and the app load when the command runs.

Options left out fall back to the ``CASCADE_*`` environment variables, then to the defaults of
``service.settings.ServiceSettings``; options given win over the environment.
"""

from __future__ import annotations

from pathlib import Path

import typer

from cascade.cli.common import bundle_error, fail, runtime_help

__all__ = ["register", "serve"]


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("serve")(serve)


def serve(
    bundle: str | None = typer.Option(
        None,
        "--bundle",
        "-b",
        help="Bundle file or directory, or a shipped bundle's name such as neu-seg (default: the embedded demo "
        "bundle). Its manifest decides the classes the API and the web page show.",
    ),
    host: str | None = typer.Option(None, help="Interface to bind (default: 127.0.0.1); 0.0.0.0 for all."),
    port: int | None = typer.Option(None, help="TCP port (default: 8000)."),
    max_batch_size: int | None = typer.Option(
        None, help="Most images merged into one predictor call (default 4; more pays off on a GPU)."
    ),
    max_wait_ms: float | None = typer.Option(None, help="Longest wait for more requests to merge, ms (default 5)."),
    queue_size: int | None = typer.Option(None, help="Images allowed to wait; beyond, 503 + Retry-After (default 64)."),
    max_upload_mb: float | None = typer.Option(None, help="Largest request body in MiB; beyond, 413 (default 32)."),
    max_files: int | None = typer.Option(None, help="Most images per /predict/batch request or zip (default 256)."),
    max_image_pixels: int | None = typer.Option(
        None, help="Largest image in pixels; beyond, 413 (default 40,000,000; decompression bombs)."
    ),
    max_aspect_ratio: float | None = typer.Option(
        None, help="Largest long side / short side; beyond, 413 (default 100; thin images cost far more once padded)."
    ),
    max_network_pixels: int | None = typer.Option(
        None, help="Largest padded/tiled network input of one image in pixels; beyond, 413 (default 48,000,000)."
    ),
    max_mask_pixels: int | None = typer.Option(
        None, help="Largest image for which masks/overlays are drawn; beyond, 413 (default 16,000,000)."
    ),
    memory_budget_mb: float | None = typer.Option(
        None,
        help="Estimated MiB all requests in flight may hold; one alone above it 413, none free in time 503 "
        "(default 3072).",
    ),
    request_timeout: float | None = typer.Option(
        None, help="Per-request inference deadline in s; beyond, 504 (default 60)."
    ),
    body_timeout: float | None = typer.Option(
        None, help="Longest pause between two chunks of a request body in s; beyond, 408 (default 10)."
    ),
    api_key: str | None = typer.Option(
        None,
        help="Require this key (X-API-Key or Authorization: Bearer). Prefer the CASCADE_API_KEY variable: "
        "options show up in process lists.",
    ),
    data_root: Path | None = typer.Option(None, help="Folder jobs may read only below this folder (default jobs off)."),
    state_dir: Path | None = typer.Option(None, help="Where jobs persist (default ~/.local/state/cascade)."),
    samples_dir: Path | None = typer.Option(
        None, help="GUI sample images (default synthetic samples drawn at start-up)."
    ),
    runtime: str | None = typer.Option(None, help="Inference runtime (default auto): " + runtime_help()),
    device: str | None = typer.Option(None, help="auto, cpu, cuda or cuda:N (default auto)."),
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=1,
        help="Inference workers, each with its own predictor, batching on its own (default: one per CPU core on "
        "CPU, one on a GPU; env CASCADE_WORKERS).",
    ),
    threads: int | None = typer.Option(
        None, help="Intra-op threads per worker (default: cores / workers on CPU, i.e. 1 with the default workers)."
    ),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Serve a cascade bundle over HTTP: /predict, /predict/batch, /jobs, the web GUI at /, /docs."""
    try:  # FastAPI, uvicorn, pydantic: the 'serve' extra
        import uvicorn
        from pydantic import ValidationError

        from service import ServiceSettings, create_app
        from service.server import uvicorn_options
        from service.state import bundle_label
    except ModuleNotFoundError as err:
        raise fail(
            f"cascade serve needs {err.name!r}: install the service extra, pip install 'steel-cascade[serve]'"
        ) from err

    from cascade.bundle import BundleError, read_manifest
    from cascade.embedded import resolve_bundle

    options = {
        "bundle": bundle,
        "host": host,
        "port": port,
        "max_batch_size": max_batch_size,
        "max_wait_ms": max_wait_ms,
        "queue_size": queue_size,
        "max_upload_mb": max_upload_mb,
        "max_files": max_files,
        "max_image_pixels": max_image_pixels,
        "max_aspect_ratio": max_aspect_ratio,
        "max_network_pixels": max_network_pixels,
        "max_mask_pixels": max_mask_pixels,
        "memory_budget_mb": memory_budget_mb,
        "request_timeout_s": request_timeout,
        "body_timeout_s": body_timeout,
        "api_key": api_key,
        "data_root": data_root,
        "state_dir": state_dir,
        "samples_dir": samples_dir,
        "runtime": runtime,
        "device": device,
        "workers": workers,
        "threads": threads,
    }
    try:
        settings = ServiceSettings(**{k: v for k, v in options.items() if v is not None})
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        typer.echo(f"error: bad settings: {problems}", err=True)
        raise typer.Exit(2) from err
    try:  # fail now, not after uvicorn started, when the bundle is missing or unreadable
        path = resolve_bundle(settings.bundle)
        manifest = read_manifest(path)
    except (BundleError, ValueError, OSError) as err:
        typer.echo(f"error: {bundle_error(settings.bundle, err)}", err=True)
        raise typer.Exit(2) from err
    for name, folder in (("--data-root", settings.data_root), ("--samples-dir", settings.samples_dir)):
        if folder is not None and not folder.is_dir():
            typer.echo(f"error: {name} {folder} is not a folder", err=True)
            raise typer.Exit(2)
    classes = ", ".join(manifest.class_names)
    typer.echo(
        f"serving {bundle_label(path)} ({manifest.num_classes} classes: {classes}) at "
        f"http://{settings.host}:{settings.port} (GUI at /, API docs at /docs)"
    )
    uvicorn.run(create_app(settings), **uvicorn_options(settings, log_level=log_level))
