"""The gate's economics through the pipeline (tiny run): thresholds.json, the bundle's manifest, evaluation.json
and the report's gate and calibration sections (training/gate_report.py).
"""

from __future__ import annotations

import json

import pytest

from cascade.bundle import read_manifest
from cascade.calibration import Calibration
from training.pipeline import PipelineResult


def test_thresholds_and_bundle_carry_curve_and_calibration(tiny_run: PipelineResult) -> None:
    tuned = json.loads((tiny_run.run_dir / "thresholds.json").read_text())
    manifest = read_manifest(tiny_run.bundle)
    curve = manifest.gate_curve
    assert curve is not None and curve.to_dict() == tuned["gate_curve"]
    assert curve.chosen == curve.dice_only  # default recipe: Dice only
    assert curve.images == tuned["validation"]["images"] and curve.calibrated
    assert curve.chosen.prob_thresholds == tuple(p.prob_threshold for p in manifest.classes)
    assert tuned["validation"]["runs_per_image"] == curve.chosen.runs_per_image
    per_class = tuned["calibration"]["classes"]
    expected = tuple(
        Calibration(per_class[str(c)]["temperature"], per_class[str(c)]["bias"]) for c in manifest.class_ids
    )
    assert manifest.calibration == expected
    for c in manifest.class_ids:
        if per_class[str(c)]["auc_before"] is not None:
            assert per_class[str(c)]["auc_after"] == pytest.approx(per_class[str(c)]["auc_before"], abs=1e-12)
    flags = [tuned["classes"][str(c)]["params"]["predictable"] for c in manifest.class_ids]
    assert flags == [p.predictable for p in manifest.classes]
    runs = [p.runs_per_image for p in curve.frontier]
    assert runs == sorted(runs) and [p.dice for p in curve.frontier] == sorted(p.dice for p in curve.frontier)


def test_evaluation_and_report_show_the_gate(tiny_run: PipelineResult) -> None:
    evaluation = json.loads((tiny_run.run_dir / "evaluation.json").read_text())
    gate = evaluation["gate"]
    assert gate["runs_per_image"] == pytest.approx(4 * evaluation["segmenter_share"])
    assert gate["images_per_second"]["cascade"] >= gate["images_per_second"]["segment_all"] > 0
    assert set(gate["per_class"]) == {"1", "2", "3", "4"}
    assert 0 <= gate["ece"] <= 1 and 0 <= gate["ece_uncalibrated"] <= 1
    report = (tiny_run.run_dir / "report.md").read_text()
    assert "## Gate economics" in report and "## Calibration" in report
    assert "| chosen |" in report and "| segment_all |" in report and "predictable" in report
    for png in ("gate_curve.png", "reliability.png"):
        assert (tiny_run.run_dir / png).read_bytes()[:4] == b"\x89PNG"
        assert f"]({png})" in report


def test_bundle_info_shows_what_the_gate_costs(tiny_run: PipelineResult) -> None:
    from typer.testing import CliRunner

    from cascade.cli.main import app

    result = CliRunner().invoke(app, ["bundle", "info", str(tiny_run.bundle)])
    assert result.exit_code == 0, result.output
    gate = result.output.split("Gate:", 1)[1]
    assert "segmenter runs/image" in gate and "Pareto frontier" in gate and "calibration (p' =" in gate


def test_service_model_and_predictions_carry_the_gate(tiny_run: PipelineResult, tmp_path) -> None:
    from cascade.predictor import CascadePredictor
    from tests.fixtures.predictor import random_images
    from tests.fixtures.service import loader_for, make_settings, running_client

    predictor = CascadePredictor.from_bundle(tiny_run.bundle, device="cpu", runtime="torch")
    manifest = predictor.manifest
    with running_client(make_settings(tmp_path), loader_for(predictor)) as client:
        body = client.get("/model").json()
    gate = body["gate"]
    assert gate["calibrated"] and gate["chosen"] == manifest.gate_curve.chosen.to_dict()
    assert gate["unpredictable_classes"] == [
        c for c, p in zip(manifest.class_ids, manifest.classes, strict=True) if not p.predictable
    ]
    assert body["manifest"]["gate_curve"] == manifest.gate_curve.to_dict()
    assert [t["predictable"] for t in body["thresholds"]] == [p.predictable for p in manifest.classes]
    raw = predictor.infer(random_images(2, (64, 400, 3)), "segment_all")  # API probabilities are the calibrated ones
    assert raw.uncalibrated is not None and not (raw.probabilities == raw.uncalibrated).all()
