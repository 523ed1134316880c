"""Tests for cascade/cli/data.py: ``cascade score`` and ``cascade check-submission``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cascade.cli.main import app
from cascade.formats import Layout, write_submission

runner = CliRunner()
SMALL = ["--height", "4", "--width", "3"]
TRUTH = [("a.jpg", ("1 2", "", "", "")), ("b.jpg", ("", "", "", "")), ("c.jpg", ("", "", "5 6", ""))]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A truth in both layouts, an images folder, an id list and a prediction on a 4x3 image."""
    images = tmp_path / "images"
    images.mkdir()
    for image_id, _ in TRUTH:
        (images / image_id).write_bytes(b"")
    paths = {"images": images, "ids": tmp_path / "ids.txt"}
    paths["ids"].write_text("a.jpg\nb.jpg\nc.jpg\n")
    paths["truth"] = tmp_path / "truth.csv"
    write_submission(paths["truth"], TRUTH)
    paths["truth_long"] = tmp_path / "truth_long.csv"
    write_submission(paths["truth_long"], TRUTH, Layout.LONG)
    paths["pred"] = tmp_path / "pred.csv"  # a: 2 px vs truth 2 px, overlap 1 -> 0.5; c missing -> all empty
    pred_rows = [("a.jpg", ("2 2", "", "", "")), ("b.jpg", ("", "", "", ""))]
    write_submission(paths["pred"], pred_rows, Layout.LONG)
    paths["pred_wide"] = tmp_path / "pred_wide.csv"
    write_submission(paths["pred_wide"], pred_rows)
    return paths


def test_help_lists_the_options() -> None:
    for command, options in (
        ("score", ("--images", "--ids", "--height", "--width", "--json")),
        ("check-submission", ("--images", "--ids", "--height", "--width", "--layout")),
    ):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0
        for option in options:
            assert option in result.output


def test_score_table_and_json(files: dict[str, Path]) -> None:
    result = runner.invoke(app, ["score", str(files["truth"]), str(files["pred"]), *SMALL])
    assert result.exit_code == 0, result.output
    # class 1: (0.5 + 1 + 1) / 3; class 3: (1 + 1 + 0) / 3; mean over 12 pairs = (12 - 0.5 - 1) / 12
    assert "1 pits" in result.output and "0.83333" in result.output and "0.66667" in result.output
    assert "0.87500" in result.output and "3 images" in result.output
    result = runner.invoke(app, ["score", str(files["truth"]), str(files["pred"]), *SMALL, "--json"])
    report = json.loads(result.output)
    assert report["mean"] == pytest.approx(10.5 / 12)
    assert report["per_class"] == pytest.approx([2.5 / 3, 1, 2 / 3, 1])
    assert report["n_images"] == 3


def test_score_long_truth_needs_the_image_list(files: dict[str, Path]) -> None:
    truth, pred = str(files["truth_long"]), str(files["pred_wide"])
    result = runner.invoke(app, ["score", truth, pred, *SMALL])  # b.jpg is clean: absent from truth_long
    assert result.exit_code == 2
    assert "'b.jpg'" in result.output and "pass --images or --ids" in result.output
    result = runner.invoke(app, ["score", truth, str(files["pred"]), *SMALL, "--json"])  # pred lacks b.jpg too
    assert result.exit_code == 0
    assert "warning: TRUTH lists positive rows only" in result.output
    for option in (["--images", str(files["images"])], ["--ids", str(files["ids"])]):
        result = runner.invoke(app, ["score", truth, pred, *SMALL, "--json", *option])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["mean"] == pytest.approx(10.5 / 12)


def test_score_rejects_malformed_files(files: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("ImageId,ClassId,EncodedPixels\na.jpg,1,1 2 3\n")
    result = runner.invoke(app, ["score", str(files["truth"]), str(bad), *SMALL])
    assert result.exit_code == 2
    assert f"{bad}:2:" in result.output and "odd number of tokens" in result.output
    result = runner.invoke(app, ["score", str(files["truth"]), str(files["pred"])])  # default 256x1600 is fine
    assert result.exit_code == 0


def test_check_submission_ok(files: dict[str, Path]) -> None:
    result = runner.invoke(app, ["check-submission", str(files["truth"]), "--images", str(files["images"]), *SMALL])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"OK: {files['truth']}: 3 images (4 rows each), every RLE valid for 4x3"
    long_args = ["check-submission", str(files["truth_long"]), "--ids", str(files["ids"]), "--layout", "long"]
    assert runner.invoke(app, [*long_args, *SMALL]).exit_code == 0


def test_check_submission_reports_problems_with_lines(files: dict[str, Path]) -> None:
    result = runner.invoke(app, ["check-submission", str(files["pred"]), "--ids", str(files["ids"]), *SMALL])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[0].startswith(f"{files['pred']}:1: [header] header is 'ImageId,ClassId,EncodedPixels'")
    assert f"{files['pred']}: [missing_image] image 'c.jpg' has no rows" in lines
    assert f"{files['pred']}: [missing_image] image 'b.jpg' has no rows" in lines  # LONG rows: clean b.jpg absent
    assert lines[-1] == "3 problems: 2 missing_image, 1 header"
    result = runner.invoke(app, ["check-submission", str(files["truth"]), "--ids", str(files["ids"])])
    assert result.exit_code == 0  # 4x3 runs fit in 256x1600 too
    tiny = ["--height", "1", "--width", "3"]
    result = runner.invoke(app, ["check-submission", str(files["truth"]), "--ids", str(files["ids"]), *tiny])
    assert result.exit_code == 1
    assert f"{files['truth']}:12: [rle_out_of_range]" in result.output  # c.jpg class 3 "5 6" needs 10 pixels


def test_check_submission_needs_an_image_list(files: dict[str, Path]) -> None:
    result = runner.invoke(app, ["check-submission", str(files["truth"])])
    assert result.exit_code == 2
    assert "give --images DIR or --ids FILE" in result.output
    both = ["--images", str(files["images"]), "--ids", str(files["ids"])]
    assert runner.invoke(app, ["check-submission", str(files["truth"]), *both]).exit_code == 2
    result = runner.invoke(app, ["check-submission", str(files["truth"]), "--ids", str(files["ids"]), "--layout", "x"])
    assert result.exit_code == 2
