"""End-to-end tests of the training pipeline on the tiny recipe (one session-wide run, ~30 s)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cascade.bundle import load_bundle, read_manifest
from cascade.cli.main import app
from cascade.constants import CLASS_IDS
from cascade.imageio import read_image
from cascade.predictor import CascadePredictor
from tests.fixtures.training import tiny_config, tiny_recipe, write_recipe
from training.distributed import DistContext
from training.pipeline import BASE_STAGES, PipelineResult, parse_overrides, run_pipeline
from training.workspace import open_workspace


def test_every_stage_runs_and_writes_a_bundle(tiny_run: PipelineResult) -> None:
    assert tiny_run.stages == BASE_STAGES
    assert tiny_run.bundle is not None and tiny_run.bundle.is_file()
    for stage in BASE_STAGES:
        assert (tiny_run.run_dir / "stages" / f"{stage}.done").is_file()


def test_bundle_runs_in_the_predictor(tiny_run: PipelineResult, synth_dir: Path, synth_image_ids: tuple) -> None:
    bundle = load_bundle(tiny_run.bundle)
    predictor = CascadePredictor(bundle, device="cpu", runtime="torch")
    images = [read_image(synth_dir / "train_images" / i) for i in synth_image_ids[:3]]
    results = predictor.predict(images, image_ids=list(synth_image_ids[:3]))
    assert [r.image_id for r in results] == list(synth_image_ids[:3])
    assert all(len(r.classes) == 4 and r.height == 256 and r.width == 1600 for r in results)
    assert predictor.manifest.input_policy.scale == 0.25


def test_manifest_carries_tuned_thresholds_and_provenance(tiny_run: PipelineResult) -> None:
    manifest = read_manifest(tiny_run.bundle)
    tuned = json.loads((tiny_run.run_dir / "thresholds.json").read_text())
    for class_id, params in zip(CLASS_IDS, manifest.classes, strict=True):
        chosen = tuned["classes"][str(class_id)]["params"]
        assert (params.prob_threshold, params.pixel_threshold, params.min_area) == (
            chosen["prob_threshold"], chosen["pixel_threshold"], chosen["min_area"],
        )  # fmt: skip
        assert chosen["prob_threshold"] in tuned["grid"]["prob_thresholds"]
    provenance = manifest.provenance
    assert provenance["dataset"]["images"] == 24
    assert provenance["config"]["classifier"]["backbone"] == "test_efficientnet"
    assert {"validation", "heldout"} <= set(provenance["metrics"])
    assert set(provenance["metrics"]["stage_seconds"]) == set(BASE_STAGES) - {"evaluate"}
    assert provenance["code_version"] and provenance["created"]
    assert load_bundle(tiny_run.bundle).segmenters[1] is not None
    kwargs = {c: spec.kwargs for c, spec in manifest.segmenters.items()}  # segmenter.class_kwargs
    assert kwargs[3]["decoder_segmentation_channels"] == 64 and kwargs[1]["decoder_segmentation_channels"] == 32


def test_intermediate_outputs(tiny_run: PipelineResult) -> None:
    run_dir = tiny_run.run_dir
    with (run_dir / "classifier" / "oof.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24 and {r["fold"] for r in rows} == {"0", "1"}
    assert all(0.0 <= float(r[f"prob_{c}"]) <= 1.0 for r in rows for c in CLASS_IDS)
    with (run_dir / "hard_negatives.csv").open() as f:
        negatives = list(csv.DictReader(f))
    labels = {r["ImageId"]: r for r in rows}
    assert negatives, "threshold 0 must mine some negatives"
    assert all(labels[n["ImageId"]][f"label_{n['ClassId']}"] == "0" for n in negatives)
    trained = 0
    for class_id in CLASS_IDS:
        folder = run_dir / "segmenter" / f"class{class_id}"
        assert (folder / "best.pt").is_file()
        summary = json.loads((folder / "done.json").read_text())
        assert (folder / "metrics.csv").is_file() == (summary["train_images"] > 0)
        trained += summary["train_images"] > 0
    assert trained >= 3
    with (run_dir / "segmenter" / "class3" / "metrics.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 2  # segmenter.class_epochs {3: 2}; the others train 1 epoch
    assert (run_dir / "classifier" / "final" / "best.pt").is_file()


def test_report_and_evaluation(tiny_run: PipelineResult) -> None:
    run_dir = tiny_run.run_dir
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert evaluation["images"] == 12  # the tuning fold's validation half of 24 images
    for key in ("dice_cascade", "dice_segment_all", "dice_empty"):
        assert 0.0 <= evaluation[key] <= 1.0
    assert set(evaluation["classifier"]) == {"1", "2", "3", "4"}
    report = (run_dir / "report.md").read_text()
    assert "all-empty baseline" in report and "ROC AUC" in report
    assert "nan" not in report  # an AUC that cannot be computed reads "n/a (...)"
    for png in ("sweeps.png", "per_class_dice.png", "confusion.png", "loss_curves.png"):
        assert (run_dir / png).read_bytes()[:4] == b"\x89PNG"
        assert f"]({png})" in report


def test_resume_skips_finished_stages(tiny_run: PipelineResult, synth_dir: Path) -> None:
    again = run_pipeline(tiny_config(synth_dir, tiny_run.run_dir), resume=True)
    assert again.stages == ()


def test_missing_earlier_stage_output_names_the_stage(synth_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run the 'classifier' stage first"):
        run_pipeline(tiny_config(synth_dir, tmp_path), stages=["hard_negatives"])
    with pytest.raises(ValueError, match="unknown stage"):
        run_pipeline(tiny_config(synth_dir, tmp_path), stages=["train"])


def test_limit_and_folds_file(synth_dir: Path, tmp_path: Path) -> None:
    ws = open_workspace(tiny_config(synth_dir, tmp_path, **{"data.limit": 10}), tmp_path, DistContext())
    assert len(ws.image_ids) == 10
    with (tmp_path / "folds.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 10
    assert np.array_equal(ws.labels_of(list(ws.image_ids[:2])), ws.labels[:2])


def test_cli_help_and_errors(tmp_path: Path, synth_dir: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0 and "--install-embedded" in result.output and "--stage" in result.output
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path / "no-data", tmp_path / "run"))
    result = runner.invoke(app, ["train", "--config", str(recipe)])
    assert result.exit_code == 2 and "annotations not found" in result.output
    result = runner.invoke(app, ["train", "--config", str(recipe), "--set", "classifier.train.epochs=oops"])
    assert result.exit_code == 2 and "expected an integer" in result.output


def test_parse_overrides() -> None:
    assert parse_overrides(["a.b=2", "c=[1, 2]", "d=null"]) == {"a.b": 2, "c": [1, 2], "d": None}
    with pytest.raises(ValueError, match=r"section\.key=value"):
        parse_overrides(["novalue"])


def test_install_embedded_refuses_folders_and_large_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from training import package

    with pytest.raises(ValueError, match="single-file bundle"):
        package.install_embedded(tmp_path)
    big = tmp_path / "big.cascade.safetensors"
    big.write_bytes(b"0" * 64)
    monkeypatch.setattr(package, "EMBEDDED_MAX_BYTES", 32)
    with pytest.raises(ValueError, match="must be <= 20 MB"):
        package.install_embedded(big)


def test_parallel_folds_match_the_sequential_out_of_fold_table(
    tiny_run: PipelineResult, synth_dir: Path, tmp_path: Path
) -> None:
    config = tiny_config(synth_dir, tmp_path, threads=2, **{"classifier.parallel_folds": 2})
    result = run_pipeline(config, stages=["classifier"])
    assert result.stages == ("classifier",)
    with (tmp_path / "classifier" / "oof.csv").open() as f:
        parallel = list(csv.DictReader(f))
    with (tiny_run.run_dir / "classifier" / "oof.csv").open() as f:
        sequential = list(csv.DictReader(f))
    assert [(r["ImageId"], r["fold"]) for r in parallel] == [(r["ImageId"], r["fold"]) for r in sequential]
    for k in range(2):  # each process trained its fold and wrote the fold's record and weights
        assert (tmp_path / "classifier" / f"fold{k}" / "done.json").is_file()
        assert (tmp_path / "classifier" / f"fold{k}" / "classifier.pt").is_file()
    assert all(0.0 <= float(r[f"prob_{c}"]) <= 1.0 for r in parallel for c in CLASS_IDS)
    assert (tmp_path / "classifier" / "final" / "best.pt").is_file()  # the refit ran in the parent
