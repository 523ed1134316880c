"""Tests for cascade/cli/main.py: commands from other layers arrive through entry points, and the
``cascade`` app itself loads neither the service, the training pipeline nor torch."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest
import typer
from typer.testing import CliRunner

from cascade.cli import main as cli_main
from training.pipeline import STAGE_NAMES

runner = CliRunner()


def test_serve_and_train_come_from_their_own_packages() -> None:
    registered = {command.name: command.callback for command in cli_main.app.registered_commands}
    assert registered["serve"].__module__ == "service.cli"
    assert registered["train"].__module__ == "training.cli"


def test_train_help_lists_the_pipeline_stages() -> None:
    result = runner.invoke(cli_main.app, ["train", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert f"Run only this stage (repeatable): {', '.join(STAGE_NAMES)}." in " ".join(result.output.split())


def test_an_entry_point_that_cannot_be_imported_explains_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = EntryPoint("frobnicate", "no_such_package.cli:register", cli_main.COMMANDS_GROUP)
    monkeypatch.setattr(cli_main, "entry_points", lambda group: [broken] if group == cli_main.COMMANDS_GROUP else [])
    app = typer.Typer()
    app.command("other")(lambda: None)
    assert cli_main.register_plugins(app) == ["frobnicate"]
    result = runner.invoke(app, ["frobnicate", "--port", "1", "x"])
    assert result.exit_code == 1
    assert "cascade frobnicate is not available: no_such_package.cli:register cannot be imported" in result.output
    assert "No module named 'no_such_package'" in result.output


def test_the_cascade_app_imports_no_heavy_or_upper_layer_module() -> None:
    heavy = ["torch", "fastapi", "uvicorn", "service.app", "training.workspace", "training.train_classifier"]
    code = f"import sys, cascade.cli.main; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
