"""Tests for training/pseudo_label.py: the per-class selection and its thresholds, validation images never
pseudo-labelled, hard vs soft labels in the round's workspace, resumable rounds and the best-round choice.

The round logic runs against the session's tiny trained run (``tiny_run``) with a stand-in for the base stages
that records what each round's workspace holds; one slow test runs a real round end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cascade.manifest import ClassParams
from cascade.synth import generate_dataset
from tests.fixtures.training import tiny_config
from training.config import PseudoLabelConfig
from training.distributed import DistContext
from training.paths import RunPaths
from training.pipeline import PipelineResult, run_pipeline
from training.pseudo_label import ABSENT, PRESENT, UNCERTAIN, list_unlabelled, run, select
from training.workspace import Workspace, open_workspace

CFG = PseudoLabelConfig(present_threshold=0.8, absent_threshold=0.2, pixel_confidence=0.7, mask_confidence=0.5)
PARAMS = (ClassParams(pixel_threshold=0.5, min_area=0),) * 2


def _maps(block: float, other: float = 0.0) -> list[np.ndarray]:
    """Class 0: a 4x4 block of ``block`` (8 of its 16 pixels at ``block``, 8 just above the pixel threshold
    when ``other`` is 0.6); class 1 empty."""
    first = np.zeros((8, 8), dtype=np.float32)
    first[:4, :4] = block
    first[:2, :4] = other or block
    return [first, np.zeros((8, 8), dtype=np.float32)]


@pytest.mark.parametrize(
    ("probability", "state"),
    [(0.8, PRESENT), (0.7999, UNCERTAIN), (0.2, ABSENT), (0.2001, UNCERTAIN)],
)
def test_class_probability_thresholds_just_under_and_over(probability: float, state: int) -> None:
    decision = select(np.array([probability, 0.0]), _maps(0.9), PARAMS, CFG)
    assert decision.states[0] == state
    assert decision.kept == (state != UNCERTAIN)
    assert decision.masks[0].any() == (state == PRESENT)


@pytest.mark.parametrize(
    ("pixel", "confident_share", "state"),
    [(0.7, 1.0, PRESENT), (0.6999, 0.5, PRESENT), (0.6999, 0.5001, UNCERTAIN)],
)
def test_mask_confidence_thresholds(pixel: float, confident_share: float, state: int) -> None:
    """Half the predicted mask at 0.9; the other half at ``pixel``: confident when ``pixel`` >= 0.7."""
    cfg = PseudoLabelConfig(
        present_threshold=0.8, absent_threshold=0.2, pixel_confidence=0.7, mask_confidence=confident_share
    )
    maps = _maps(pixel, other=0.9)
    decision = select(np.array([0.95, 0.0]), maps, PARAMS, cfg)
    assert decision.states[0] == state
    expected = 1.0 if pixel >= 0.7 else 0.5
    assert decision.mask_confidence[0] == pytest.approx(expected)


def test_present_class_with_an_empty_mask_is_uncertain_and_clean_images_follow_include_clean() -> None:
    empty = [np.zeros((8, 8), dtype=np.float32)] * 2
    assert select(np.array([0.95, 0.0]), empty, PARAMS, CFG).states[0] == UNCERTAIN
    clean = select(np.array([0.01, 0.05]), empty, PARAMS, CFG)
    assert clean.kept and (clean.states == ABSENT).all()
    no_clean = PseudoLabelConfig(**{**CFG.__dict__, "include_clean": False})
    assert not select(np.array([0.01, 0.05]), empty, PARAMS, no_clean).kept


def test_config_rejects_crossed_thresholds() -> None:
    with pytest.raises(ValueError, match="absent_threshold < present_threshold"):
        PseudoLabelConfig(present_threshold=0.3, absent_threshold=0.5)
    with pytest.raises(ValueError, match="rounds"):
        PseudoLabelConfig(rounds=0)


def test_list_unlabelled_spreads_and_explains(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        list_unlabelled(tmp_path / "nope", None)
    with pytest.raises(FileNotFoundError, match="holds no images"):
        list_unlabelled(tmp_path, None)


# --- rounds, against the tiny trained run ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def unlabelled_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("unlabelled_src"), 6, 777).images_dir


def _setup(tiny_run: PipelineResult, unlabelled_src: Path, tmp_path: Path, synth_dir: Path, **overrides) -> Workspace:
    """A copy of the tiny run and an unlabelled folder: 6 new images, a renamed copy of a validation image and a
    file named like a validation image."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run_dir, ignore=shutil.ignore_patterns("heldout-*", "gallery"))
    folder = tmp_path / "unlabelled"
    shutil.copytree(unlabelled_src, folder)
    settings = {"unlabelled": str(folder), "rounds": 2, "present_threshold": 0.5, "absent_threshold": 0.4999,
                "pixel_confidence": 0.0, "mask_confidence": 0.0, **overrides}  # fmt: skip
    config = tiny_config(synth_dir, run_dir, pseudo_label=settings)
    ws = open_workspace(config, run_dir, DistContext())
    _, val_ids = ws.tune_split
    shutil.copyfile(synth_dir / "train_images" / val_ids[0], folder / "copy-of-a-validation-image.jpg")
    shutil.copyfile(unlabelled_src / sorted(p.name for p in unlabelled_src.iterdir())[0], folder / val_ids[1])
    return ws


class FakeRound:
    """Stands in for the base stages: records the round's workspace and writes a tuned file and a bundle whose
    validation Dice is ``dice[round]``; raises on ``fail_on``."""

    def __init__(self, base: Workspace, dice: dict[int, float], fail_on: int | None = None) -> None:
        self.base, self.dice, self.fail_on, self.seen = base, dice, fail_on, []

    def __call__(self, ws: Workspace) -> None:
        r = int(ws.run_dir.name.removeprefix("round"))
        self.seen.append((r, ws))
        if r == self.fail_on:
            raise KeyboardInterrupt("interrupted")
        record = json.loads(self.base.paths.thresholds_json.read_text())
        record["validation"]["dice_cascade"] = self.dice[r]
        ws.paths.thresholds_json.write_text(json.dumps(record))
        name = self.base.config.package.file_name
        shutil.copyfile(self.base.paths.bundle(name), ws.paths.bundle(name))


def test_rounds_never_label_validation_images_and_pick_the_best_round(
    tiny_run: PipelineResult, unlabelled_src: Path, tmp_path: Path, synth_dir: Path
) -> None:
    ws = _setup(tiny_run, unlabelled_src, tmp_path, synth_dir)
    base_dice = json.loads(ws.paths.thresholds_json.read_text())["validation"]["dice_cascade"]
    fake = FakeRound(ws, {1: base_dice + 0.05, 2: base_dice + 0.01})
    summary = json.loads(run(ws, False, fake).read_text())
    _, val_ids = ws.tune_split
    for _, round_ws in fake.seen:
        pseudo = round_ws.pseudo
        assert pseudo is not None and 0 < len(pseudo.image_ids) <= 6
        assert not set(pseudo.image_ids) & (set(val_ids) | {"copy-of-a-validation-image.jpg"})
        assert all(not set(pseudo.image_ids) & set(val) for _, val in round_ws.folds)
        assert all(set(pseudo.image_ids) <= set(train) for train, _ in round_ws.folds)
        assert round_ws.labels_of(list(pseudo.image_ids)).shape == (len(pseudo.image_ids), 4)
    assert any("pixels equal a validation image" in m for m in summary["screening"])
    assert any("named like validation images" in m for m in summary["screening"])
    assert [r["round"] for r in summary["rounds"]] == [0, 1, 2] and summary["chosen_round"] == 1
    assert summary["bundle"].endswith(str(Path("round1") / ws.config.package.file_name))
    report = ws.paths.pseudo_report_md.read_text()
    assert "| 1 (chosen) |" in report and "all-empty" in report


def test_round_zero_wins_when_pseudo_labels_do_not_help(
    tiny_run: PipelineResult, unlabelled_src: Path, tmp_path: Path, synth_dir: Path
) -> None:
    ws = _setup(tiny_run, unlabelled_src, tmp_path, synth_dir, rounds=1)
    base_dice = json.loads(ws.paths.thresholds_json.read_text())["validation"]["dice_cascade"]
    summary = json.loads(run(ws, False, FakeRound(ws, {1: base_dice})).read_text())
    assert summary["chosen_round"] == 0  # a tie keeps the round without pseudo-labels
    assert summary["bundle"] == str(ws.paths.bundle(ws.config.package.file_name))


def test_interrupted_rounds_resume(
    tiny_run: PipelineResult, unlabelled_src: Path, tmp_path: Path, synth_dir: Path
) -> None:
    ws = _setup(tiny_run, unlabelled_src, tmp_path, synth_dir)
    base_dice = json.loads(ws.paths.thresholds_json.read_text())["validation"]["dice_cascade"]
    dice = {1: base_dice + 0.01, 2: base_dice + 0.02}
    with pytest.raises(KeyboardInterrupt):
        run(ws, False, FakeRound(ws, dice, fail_on=2))
    round1, round2 = (RunPaths(ws.paths.pseudo_round_dir(r)) for r in (1, 2))
    assert round1.round_json.is_file() and not round2.round_json.is_file()
    labels_written = round2.pseudo_labels_csv.stat().st_mtime_ns
    again = FakeRound(ws, dice)
    summary = json.loads(run(ws, True, again).read_text())
    assert [r for r, _ in again.seen] == [2]  # round 1 skipped; round 2 continues on its written pseudo-labels
    assert round2.pseudo_labels_csv.stat().st_mtime_ns == labels_written
    assert summary["chosen_round"] == 2
    fresh = FakeRound(ws, dice)
    run(ws, False, fresh)  # without resume the rounds start afresh
    assert [r for r, _ in fresh.seen] == [1, 2]


@pytest.mark.parametrize("soft", [False, True])
def test_hard_and_soft_labels(
    soft: bool, tiny_run: PipelineResult, unlabelled_src: Path, tmp_path: Path, synth_dir: Path
) -> None:
    ws = _setup(tiny_run, unlabelled_src, tmp_path, synth_dir, rounds=1, soft=soft)
    fake = FakeRound(ws, {1: 0.0})
    run(ws, False, fake)
    round_ws = fake.seen[0][1]
    pseudo = round_ws.pseudo
    ids = list(pseudo.image_ids)
    targets = round_ws.targets_of(ids)
    labels = round_ws.labels_of(ids)
    present = np.argwhere(labels)
    assert present.size, "the permissive thresholds must keep some present classes"
    i, k = present[0]
    mask = round_ws.mask_reader(round_ws.class_ids[k])(ids[i])
    if soft:
        assert round_ws.paths.soft_masks_dir.is_dir() and pseudo.soft_dir is not None
        assert not np.isin(targets, (0.0, 1.0)).all()  # the teacher's probabilities
        assert mask.dtype == np.float32 and mask.min() >= 0.0 and mask.max() <= 1.0
        assert not np.isin(mask, (0.0, 1.0)).all()
    else:
        assert pseudo.soft_dir is None and np.array_equal(targets, labels.astype(np.float32))
        assert mask.dtype == bool and mask.any()
    assert round_ws.all_masks(ids[i]).dtype == bool


@pytest.mark.slow
def test_pseudo_label_stage_end_to_end(
    tiny_run: PipelineResult, unlabelled_src: Path, tmp_path: Path, synth_dir: Path
) -> None:
    ws = _setup(tiny_run, unlabelled_src, tmp_path, synth_dir, rounds=1)
    result = run_pipeline(ws.config, ws.run_dir, stages=["pseudo_label"])
    assert result.stages == ("pseudo_label",)
    summary = json.loads(ws.paths.pseudo_summary_json.read_text())
    round1 = RunPaths(ws.paths.pseudo_round_dir(1))
    assert round1.stage_marker("evaluate").is_file() and round1.report_md.is_file()
    assert result.bundle == Path(summary["bundle"])
    again = run_pipeline(ws.config, ws.run_dir, stages=["pseudo_label"], resume=True)
    assert again.stages == ()
