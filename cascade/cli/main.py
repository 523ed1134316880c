"""Entry point of the ``cascade`` command: one typer app, one sub-module per group of commands.

The core's commands live in ``cascade.cli``; the commands that compose the core with another layer
(``cascade serve`` from ``service``, ``cascade train`` from ``training``) register themselves through the
``steel_cascade.commands`` entry points of the installed distribution (``pyproject.toml``), so nothing in
``cascade`` imports ``service`` or ``training``. Each module imports heavy packages (torch, FastAPI) inside
its command bodies, so ``cascade --help`` stays fast.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points

import typer

from cascade.cli import bundle as _bundle
from cascade.cli import common as _common
from cascade.cli import data as _data
from cascade.cli import export as _export
from cascade.cli import mosaic as _mosaic
from cascade.cli import predict as _predict
from cascade.cli import synth as _synth

__all__ = ["COMMANDS_GROUP", "app", "register_plugins"]

COMMANDS_GROUP = "steel_cascade.commands"
"""Entry-point group of ``register(app)`` functions adding commands from outside ``cascade``."""

logger = logging.getLogger(__name__)

app = typer.Typer(
    name="cascade",
    help="Steel-defect cascade: synthesize data, train, score folders, check submissions and serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level.")) -> None:
    """Steel-defect cascade command line."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else getattr(logging, os.environ.get("CASCADE_LOG_LEVEL", "INFO")),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _unavailable(entry: EntryPoint, error: Exception) -> Callable[[typer.Context], None]:
    """Stand-in for a command whose package cannot be imported: says why, whatever the arguments."""

    def command(ctx: typer.Context) -> None:
        typer.echo(
            f"error: cascade {entry.name} is not available: {entry.value} cannot be imported ({error}); "
            "reinstall the project with its extras (make install, or pip install -e '.[train,serve]')",
            err=True,
        )
        raise typer.Exit(1)

    command.__doc__ = f"(unavailable: {entry.value} cannot be imported)"
    return command


def register_plugins(target: typer.Typer, group: str = COMMANDS_GROUP) -> list[str]:
    """Call every ``register(app)`` entry point of ``group`` on ``target``; return the names registered.

    An entry point whose module fails to import becomes a command of its name that explains the failure
    and exits 1 (instead of a missing command or a traceback at every ``cascade --help``).
    """
    names = []
    for entry in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            register = entry.load()
        except ImportError as err:
            logger.debug("entry point %s = %s failed to load: %s", entry.name, entry.value, err)
            target.command(
                entry.name,
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
                add_help_option=False,
            )(_unavailable(entry, err))
        else:
            register(target)
        names.append(entry.name)
    return names


for _module in (_synth, _mosaic, _data, _bundle, _export, _predict):
    _module.register(app)
register_plugins(app)  # serve (service.cli), train (training.cli)
_common.apply_help_style(app)  # flags without '<bool>', arguments as NAME

if __name__ == "__main__":  # pragma: no cover
    app()
