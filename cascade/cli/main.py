"""Entry point of the ``cascade`` command: one typer app, one sub-module per group of commands.

Each sub-module imports heavy packages (torch, the service, training) inside its command bodies,
so ``cascade --help`` stays fast and ``cascade`` never imports ``service``/``training`` at import time.
"""

from __future__ import annotations

import logging
import os

import typer

from cascade.cli import bundle as _bundle
from cascade.cli import common as _common
from cascade.cli import data as _data
from cascade.cli import export as _export
from cascade.cli import predict as _predict
from cascade.cli import serve as _serve
from cascade.cli import synth as _synth
from cascade.cli import train as _train

__all__ = ["app"]

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


for _module in (_synth, _data, _bundle, _export, _predict, _train, _serve):
    _module.register(app)
_common.apply_help_style(app)  # flags without '<bool>', arguments as NAME

if __name__ == "__main__":  # pragma: no cover
    app()
