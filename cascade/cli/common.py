"""What every ``cascade`` command shares: the help style, one-line errors, loading a bundle.

Help: typer prints a ``<bool>`` type next to every flag (``--json <bool>``), which reads as if the flag took
a value (``cascade bundle info --json true`` then takes ``true`` for the bundle path), and shows arguments
as ``{truth}``. ``CascadeCommand``/``CascadeGroup`` print flags bare and arguments as ``TRUTH``;
``apply_help_style`` puts them on every command of an app.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
from typer.models import DefaultPlaceholder

if TYPE_CHECKING:
    from cascade.bundle import LoadedBundle
    from cascade.predictor import CascadePredictor

__all__ = [
    "CascadeCommand",
    "CascadeGroup",
    "apply_help_style",
    "bundle_error",
    "fail",
    "load_bundle_or_exit",
    "load_predictor_or_exit",
    "runtime_help",
]

EXIT_FAILED = 1


def _style_params(params: list[Any]) -> list[Any]:
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""  # no "<bool>" next to a flag (the rich help shows the metavar as the type)
        elif isinstance(param, TyperArgument) and param.metavar is None and param.name:
            param.metavar = param.name.upper()
    return params


def _usage_piece(piece: str) -> str:
    """``{truth}`` -> ``TRUTH`` (required), ``[path]`` -> ``[PATH]``; ``[OPTIONS]`` and the rest unchanged."""
    match = re.fullmatch(r"\{([^{}]+)\}(\.\.\.)?", piece)
    if match:
        return match.group(1).upper() + (match.group(2) or "")
    return piece.upper() if re.fullmatch(r"\[[^\[\]]+\](\.\.\.)?", piece) else piece


class CascadeCommand(TyperCommand):
    """A typer command whose help shows flags without a type and arguments in capitals."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _style_params(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [_usage_piece(p) for p in super().collect_usage_pieces(ctx)]


class CascadeGroup(TyperGroup):
    """A typer group (``cascade``, ``cascade bundle``) with the same help style as ``CascadeCommand``."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _style_params(super().get_params(ctx))


def apply_help_style(app: typer.Typer) -> None:
    """Give every command and sub-group of ``app`` (registered so far) the cascade help style."""
    if _is_default(app.info.cls, TyperGroup):
        app.info.cls = CascadeGroup
    for command in app.registered_commands:
        if _is_default(command.cls, TyperCommand):
            command.cls = CascadeCommand
    for group in app.registered_groups:
        if group.typer_instance is not None:
            apply_help_style(group.typer_instance)
        if _is_default(group.cls, TyperGroup):
            group.cls = CascadeGroup


def _is_default(cls: Any, base: type) -> bool:
    return cls is None or cls is base or isinstance(cls, DefaultPlaceholder)


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Print ``error: message`` on stderr; raise the returned ``typer.Exit``."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def bundle_error(bundle: str | Path | None, error: Exception) -> str:
    """One line for a bundle that cannot be loaded; a bare unknown name also lists the shipped bundles."""
    message = str(error)
    text = "" if bundle is None else str(bundle)
    if text and "/" not in text and not Path(text).exists() and "shipped" not in message:
        from cascade.embedded import embedded_bundle_names

        message += f"; shipped bundles by name: {', '.join(embedded_bundle_names()) or 'none'}"
    return message


def load_bundle_or_exit(bundle: str | Path | None, code: int = EXIT_FAILED) -> LoadedBundle:
    """``load_bundle(resolve_bundle(bundle))``, or one ``error:`` line and exit ``code``."""
    from cascade.bundle import BundleError, load_bundle
    from cascade.embedded import resolve_bundle

    try:
        return load_bundle(resolve_bundle(bundle))
    except (BundleError, OSError) as err:
        raise fail(bundle_error(bundle, err), code) from err


def load_predictor_or_exit(
    bundle: str | Path | None, *, device: str, runtime: str, threads: int | None, code: int = EXIT_FAILED
) -> CascadePredictor:
    """``CascadePredictor.from_bundle(...)``, or one ``error:`` line (missing bundle, bad runtime) and exit."""
    from cascade.bundle import BundleError
    from cascade.predictor import CascadePredictor

    try:
        return CascadePredictor.from_bundle(bundle, device=device, runtime=runtime, threads=threads)
    except (BundleError, OSError) as err:
        raise fail(bundle_error(bundle, err), code) from err
    except ValueError as err:  # an unknown or unavailable runtime/device names the allowed ones
        raise fail(str(err), code) from err


def runtime_help() -> str:
    """``--runtime`` help listing every runtime name."""
    from cascade.constants import RUNTIME_NAMES

    return f"auto (the fastest that passes the parity check) or one of: {', '.join(RUNTIME_NAMES)}."
