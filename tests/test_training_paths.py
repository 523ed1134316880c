"""Tests for training/paths.py and the stage registry of training/pipeline.py: one name per run-folder file, one
list of stages, and no stage module that names another stage's files or imports the pipeline."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from training.paths import RunPaths
from training.pipeline import BASE_STAGES, STAGE_NAMES, STAGES, stage

TRAINING = Path(__file__).resolve().parents[1] / "training"


def test_run_paths_lay_out_the_run_folder(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path)
    assert paths.oof_csv == tmp_path / "classifier" / "oof.csv"
    assert paths.classifier_weights == tmp_path / "classifier" / "final" / "classifier.pt"
    assert paths.classifier_fold_done(2) == tmp_path / "classifier" / "fold2" / "done.json"
    assert paths.segmenter_weights(3) == tmp_path / "segmenter" / "class3" / "best.pt"
    assert paths.thresholds_json == tmp_path / "thresholds.json"
    assert paths.stage_marker("tune") == tmp_path / "stages" / "tune.done"
    assert paths.pseudo_round_dir(2) == tmp_path / "pseudo_label" / "round2"
    assert paths.bundle("x.cascade.safetensors") == tmp_path / "x.cascade.safetensors"
    assert RunPaths(str(tmp_path)).root == tmp_path  # type: ignore[arg-type]


def test_stage_seconds_reads_the_markers_in_the_order_they_finished(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path)
    paths.stages_dir.mkdir()
    for i, name in enumerate(("tune", "classifier")):
        marker = paths.stage_marker(name)
        marker.write_text(json.dumps({"seconds": 1.25 + i}))
        import os

        os.utime(marker, ns=(10**9 * (i + 1), 10**9 * (i + 1)))
    paths.stage_marker("broken").write_text("not json")
    assert list(paths.stage_seconds().items()) == [("tune", 1.2), ("classifier", 2.2)]


def test_registry_order_and_lookup() -> None:
    assert tuple(s.name for s in STAGES) == STAGE_NAMES
    assert STAGE_NAMES[-1] == "pseudo_label" and "pseudo_label" not in BASE_STAGES
    assert BASE_STAGES[:2] == ("classifier", "hard_negatives") and BASE_STAGES[-1] == "evaluate"
    assert {s.name for s in STAGES if s.all_ranks} >= {"classifier", "segmenter"}
    assert stage("tune").name == "tune"
    with pytest.raises(ValueError, match=r"unknown stage 'tunes'; allowed: \['classifier'"):
        stage("tunes")


def test_pseudo_label_runs_by_default_only_with_an_unlabelled_folder(tmp_path: Path) -> None:
    from training.config import PipelineConfig, PseudoLabelConfig

    plain = PipelineConfig()
    with_folder = PipelineConfig(pseudo_label=PseudoLabelConfig(unlabelled=str(tmp_path)))
    assert [s.name for s in STAGES if s.enabled(plain)] == list(BASE_STAGES)
    assert [s.name for s in STAGES if s.enabled(with_folder)] == list(STAGE_NAMES)


def test_every_file_a_stage_reads_is_written_by_an_earlier_stage(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path)
    for i, s in enumerate(STAGES):
        written = {w(paths) for earlier in STAGES[:i] for w in earlier.writes}
        for read in s.reads:
            assert read(paths) in written, (s.name, read(paths))


def test_stage_modules_name_no_run_folder_file_and_never_import_the_pipeline() -> None:
    literal = re.compile(
        r'"(oof\.csv|thresholds\.json|hard_negatives\.csv|tune_scores\.npz|evaluation\.json|best\.pt|last\.pt|'
        r"done\.json|classifier\.pt|ood_reference\.json|report\.md|folds\.csv|stages|counts\.json|round\.json|"
        r'pseudo_labels\.csv|summary\.json)"'
    )
    offenders = []
    for module in sorted(TRAINING.glob("*.py")):
        if module.name == "paths.py":
            continue
        text = module.read_text()
        offenders += [f"{module.name}: {m}" for m in literal.findall(text)]
        if module.name not in ("pipeline.py", "cli.py", "__init__.py"):
            imports = re.findall(
                r"^\s*(?:from training(?:\.pipeline| import pipeline)|import training\.pipeline)", text, re.M
            )
            assert not imports and "run_stage_cli" not in text, module.name
    assert not offenders, offenders


def test_listing_the_stages_loads_no_torch() -> None:
    code = "import sys, training.pipeline as p; print(len(p.STAGES), 'torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == [str(len(STAGES)), "False"]
