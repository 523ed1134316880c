"""Tests for training/report.py (plots and wording of report.md) and the end-of-run summary of ``cascade train``
(``training.cli``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cascade.cli.main import app
from training.cli import NO_BETTER_MARGIN, heldout_summary
from training.pipeline import PipelineResult
from training.report import (
    MIN_DICE_SPAN,
    _describe_data,
    _dice_limits,
    format_auc,
    plot_confusion,
    plot_loss_curves,
)


@pytest.mark.parametrize(
    ("auc", "positives", "images", "expected"),
    [
        (0.9, 1, 60, "n/a (1 positive, 59 negative)"),
        (0.9, 59, 60, "n/a (59 positive, 1 negative)"),
        (float("nan"), 0, 60, "n/a (0 positive, 60 negative)"),
        (0.91234, 2, 60, "0.9123"),
    ],
)
def test_format_auc(auc: float, positives: int, images: int, expected: str) -> None:
    assert format_auc(auc, positives, images) == expected


def test_describe_data_does_not_repeat_the_count() -> None:
    assert _describe_data("split 'val' of data/x, 60 images (also used for tuning)", 60).count("60 images") == 1
    assert _describe_data("validation fold 0 of the training data", 60) == (
        "validation fold 0 of the training data (60 images)"
    )


@pytest.mark.parametrize("values", [[0.851, 0.852, 0.853], [0.99, 1.0], [0.0, 0.001], [0.2, 0.9]])
def test_dice_limits_span_at_least_min(values: list[float]) -> None:
    low, high = _dice_limits([np.array(values)])
    assert high - low >= MIN_DICE_SPAN - 1e-9
    assert low <= min(values) and high >= max(values)
    assert low >= 0.0 and high <= 1.0


def test_loss_curves_from_metrics_csv(tmp_path: Path) -> None:
    assert plot_loss_curves(tmp_path / "none.png", tmp_path) is None
    for group, name, extra in (("classifier", "fold0", "val_f1"), ("segmenter", "class1", "val_dice")):
        folder = tmp_path / group / name
        folder.mkdir(parents=True)
        (folder / "metrics.csv").write_text(
            f"epoch,train_loss,lr,{extra}\n1,0.9,0.001,0.5\n2,0.7,0.0005,\n3,0.5,0.0001,0.7\n"
        )
    path = plot_loss_curves(tmp_path / "loss_curves.png", tmp_path)
    assert path is not None and path.read_bytes()[:4] == b"\x89PNG"


def test_confusion_png(tmp_path: Path) -> None:
    labels = np.array([[1, 0], [0, 0], [1, 1], [0, 1]], dtype=bool)
    gate = np.array([[1, 0], [1, 0], [1, 1], [0, 0]], dtype=bool)
    path = plot_confusion(tmp_path / "c.png", labels, gate, (1, 2), ("pits", "scratches"))
    assert path.read_bytes()[:4] == b"\x89PNG"


def _evaluation(cascade: float, empty: float) -> dict:
    return {
        "data": "synthetic, 200 images, seed 1",
        "images": 200,
        "dice_cascade": cascade,
        "dice_segment_all": 0.8,
        "dice_empty": empty,
        "cascade": {"mean": cascade, "per_class": {"1": 0.9, "2": 0.97}},
        "empty": {"mean": empty, "per_class": {"1": 0.85, "2": 0.98}},
    }


def test_heldout_summary_warns_when_no_better_than_all_empty() -> None:
    lines, warning = heldout_summary(_evaluation(0.8503, 0.8500))
    assert "0.8503" in lines[1] and "0.8500" in lines[2] and "0.8000" in lines[3]
    assert warning is not None and "no better than predicting nothing" in warning
    assert "Classes below all-empty: 2" in warning
    assert heldout_summary(_evaluation(0.8500 + NO_BETTER_MARGIN + 0.001, 0.8500))[1] is None


def test_cli_prints_the_summary_and_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "evaluation.json").write_text(json.dumps(_evaluation(0.8503, 0.8500)))
    recipe = Path(__file__).resolve().parents[1] / "configs" / "demo-cpu.yaml"

    def fake_pipeline(*args: object, **kwargs: object) -> PipelineResult:
        return PipelineResult(run_dir, ("evaluate",), {"evaluate": 1.0}, None, None)

    monkeypatch.setattr("training.pipeline.run_pipeline", fake_pipeline)
    result = CliRunner().invoke(app, ["train", "--config", str(recipe), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "held-out Kaggle Dice (synthetic, 200 images, seed 1)" in result.output
    assert "WARNING: the cascade is no better than predicting nothing" in result.output
    only_classifier = CliRunner().invoke(
        app, ["train", "--config", str(recipe), "--out", str(run_dir), "--stage", "classifier"]
    )
    assert "held-out Kaggle Dice" not in only_classifier.output, "a stale evaluation must not be reported"
