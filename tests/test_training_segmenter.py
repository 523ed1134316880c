"""The segmenter stage (``training/train_segmenter.py``) with ``segmenter.parallel_classes``: classes trained in
spawned processes give the segmenters a sequential run gives, longest first; resume skips finished classes, and
a class whose process fails is named while the others' segmenters are kept."""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from pathlib import Path

import pytest
import torch

from cascade.constants import CLASS_IDS
from tests.fixtures.training import tiny_config
from training.config import PipelineConfig
from training.loop import load_checkpoint
from training.pipeline import PipelineResult, run_pipeline


def _segmenter_config(
    tiny_run: PipelineResult, synth_dir: Path, run_dir: Path, threads: int = 2, processes: int = 2
) -> PipelineConfig:
    """A run folder holding the tiny run's hard negatives, ready for the segmenter stage (in 2 processes x 1
    thread by default)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_run.run_dir / "hard_negatives.csv", run_dir / "hard_negatives.csv")
    return tiny_config(synth_dir, run_dir, threads=threads, **{"segmenter.parallel_classes": processes})


def _entries(segmenter_dir: Path) -> set[str]:
    """``class<id>/<name>`` of every file and folder in the segmenter folder's class folders."""
    return {f"{d.name}/{p.name}" for d in segmenter_dir.iterdir() for p in d.iterdir()}


def test_parallel_classes_match_the_sequential_segmenters(
    tiny_run: PipelineResult, synth_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The reference trains one class after another on 1 thread, as each process does: AdamW turns the float noise
    # of another thread count in near-zero gradients into lr-sized steps, far above a tolerance for float noise.
    run_pipeline(
        _segmenter_config(tiny_run, synth_dir, tmp_path / "sequential", threads=1, processes=1), stages=["segmenter"]
    )
    caplog.set_level(logging.INFO)
    caplog.clear()
    config = _segmenter_config(tiny_run, synth_dir, tmp_path / "parallel")
    assert run_pipeline(config, stages=["segmenter"]).stages == ("segmenter",)
    parallel, sequential = tmp_path / "parallel" / "segmenter", tmp_path / "sequential" / "segmenter"
    assert _entries(parallel) == _entries(sequential)
    summaries = {}
    for class_id in CLASS_IDS:
        ours = json.loads((parallel / f"class{class_id}" / "done.json").read_text())
        theirs = json.loads((sequential / f"class{class_id}" / "done.json").read_text())
        assert {k: ours[k] for k in ("best_epoch", "train_images", "val_images")} == {
            k: theirs[k] for k in ("best_epoch", "train_images", "val_images")
        }, class_id
        assert ours["best_dice"] == pytest.approx(theirs["best_dice"], abs=1e-4, nan_ok=True), class_id
        a = load_checkpoint(parallel / f"class{class_id}" / "best.pt")["model"]
        b = load_checkpoint(sequential / f"class{class_id}" / "best.pt")["model"]
        assert a.keys() == b.keys()
        for name in a:  # the same seeds: the same weights up to float noise
            torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=f"class {class_id} {name}")
        summaries[class_id] = ours
    # started longest first: epochs (class_epochs {3: 2}, else 1) x training samples (min_samples 4)
    epochs = {3: 2}

    def samples(c: int) -> int:
        n = summaries[c]["train_images"]
        return epochs.get(c, 1) * n * max(1, math.ceil(4 / n)) if n else 0

    expected = sorted(CLASS_IDS, key=samples, reverse=True)
    started = [m for r in caplog.records if (m := re.match(r"training segmenter classes ([\d, ]+) in 2 processes x 1 ",
                                                           r.getMessage()))]  # fmt: skip
    assert len(started) == 1 and [int(c) for c in started[0].group(1).split(", ")] == expected
    # the processes' epoch logs reached the parent's logging
    assert {r.getMessage().split(" epoch")[0] for r in caplog.records if r.name == "training.loop"} >= {
        f"segmenter {c}" for c in CLASS_IDS if summaries[c]["train_images"]
    }


def test_resume_skips_finished_classes_and_a_failed_class_is_named(
    tiny_run: PipelineResult, synth_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    config = _segmenter_config(tiny_run, synth_dir, tmp_path)
    segmenter = tmp_path / "segmenter"
    shutil.copytree(tiny_run.run_dir / "segmenter" / "class1", segmenter / "class1")  # finished before
    finished = {p.name: p.read_bytes() for p in (segmenter / "class1").iterdir() if p.is_file()}
    (segmenter / "class3").mkdir()
    (segmenter / "class3" / "last.pt").write_bytes(b"not a checkpoint")  # class 3's process fails on resuming
    with pytest.raises(RuntimeError, match=r"segmenter class 3 failed: \w+") as raised:
        run_pipeline(config, stages=["segmenter"], resume=True)
    message = str(raised.value)
    assert message.startswith("segmenter class 3 failed: ") and message.count(" failed: ") == 1, message
    assert message.endswith("(segmenter classes 2, 4 finished; resume keeps them)"), message
    assert "segmenter 1 already trained; skipping" in caplog.messages
    assert {p.name: p.read_bytes() for p in (segmenter / "class1").iterdir() if p.is_file()} == finished
    for class_id in (2, 4):  # the other processes ran to the end and kept their results
        assert (segmenter / f"class{class_id}" / "done.json").is_file()
        assert (segmenter / f"class{class_id}" / "best.pt").is_file()
    assert not (segmenter / "class3" / "done.json").exists()

    (segmenter / "class3" / "last.pt").unlink()
    kept = {c: (segmenter / f"class{c}" / "best.pt").stat().st_mtime_ns for c in (1, 2, 4)}
    caplog.clear()
    run_pipeline(config, stages=["segmenter"], resume=True)  # only class 3 is left: it trains here, no processes
    assert {c: (segmenter / f"class{c}" / "best.pt").stat().st_mtime_ns for c in (1, 2, 4)} == kept
    assert all(f"segmenter {c} already trained; skipping" in caplog.messages for c in (1, 2, 4))
    assert not [m for m in caplog.messages if "processes x" in m]
    assert (segmenter / "class3" / "done.json").is_file()
