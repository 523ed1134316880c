"""Tests for cascade/cli/common.py: the help style of every command and the one-line bundle errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from cascade.cli.common import CascadeCommand, _usage_piece
from cascade.cli.main import app

runner = CliRunner()


def _command_paths() -> list[list[str]]:
    root = typer.main.get_command(app)
    paths: list[list[str]] = [[]]
    for name, command in root.commands.items():
        paths.append([name])
        paths.extend([name, sub] for sub in getattr(command, "commands", {}))
    return paths


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "cascade")
def test_help_shows_flags_bare_and_arguments_in_capitals(path: list[str]) -> None:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "--help" in result.output
    assert "<bool>" not in result.output, result.output
    usage = next(line for line in result.output.splitlines() if "Usage:" in line)
    assert "{" not in usage and "}" not in usage, usage


def test_score_usage_names_its_arguments() -> None:
    result = runner.invoke(app, ["score", "--help"], env={"COLUMNS": "200"})
    assert "Usage: cascade score [OPTIONS] TRUTH PRED" in result.output


def test_every_command_uses_the_style() -> None:
    root = typer.main.get_command(app)
    for name, command in root.commands.items():
        for sub in [command, *getattr(command, "commands", {}).values()]:
            if not hasattr(sub, "commands"):
                assert isinstance(sub, CascadeCommand), name


@pytest.mark.parametrize(
    ("piece", "expected"),
    [("{truth}", "TRUTH"), ("[path]", "[PATH]"), ("{files}...", "FILES..."), ("[OPTIONS]", "[OPTIONS]"), ("x", "x")],
)
def test_usage_piece(piece: str, expected: str) -> None:
    assert _usage_piece(piece) == expected


def test_flag_does_not_take_a_value(tmp_path: Path) -> None:
    """``--json true`` is a flag plus a path: the error names the path, and the help shows no value."""
    result = runner.invoke(app, ["bundle", "info", "--json", "true"])
    assert result.exit_code == 1 and "bundle not found: true" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["bundle", "info", "no-such-bundle"],
        ["export", "no-such-bundle", "--out", "OUT"],
        ["serve", "--bundle", "no-such-bundle"],
    ],
)
def test_missing_bundle_is_one_line_everywhere(args: list[str], tmp_path: Path) -> None:
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code in (1, 2), result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: bundle not found: no-such-bundle") and "shipped bundles by name" in lines[0]
