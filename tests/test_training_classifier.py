"""The classifier stage's terminal output (``training/train_classifier.py``, ``training/loop.py``): one progress
bar per fold (one over all folds when they train in parallel processes) and one for the refit, each over all
its epochs, with the epoch log lines above the bars, not inside them."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import pytest

from tests.fixtures.training import tiny_config
from training.pipeline import run_pipeline

_BAR = re.compile(r"^(classifier (?:folds? [\d, ]+|refit)):\s+\d+%\|")
"""A drawn bar: its description, then tqdm's percentage and bar."""


def _screen(stderr: str) -> list[str]:
    """The lines a terminal shows at the end: each line's text after its last carriage return."""
    return [line.rsplit("\r", 1)[-1].rstrip() for line in stderr.split("\n") if line.rsplit("\r", 1)[-1].strip()]


def _run_classifier_stage(config, capsys: pytest.CaptureFixture[str]) -> str:
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)  # as `cascade train` logs: to the terminal the bars are on
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        run_pipeline(config, stages=["classifier"])
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("parallel", "fold_bars"),
    [
        (1, ["classifier fold 0", "classifier fold 1"]),
        pytest.param(2, ["classifier folds 0, 1"], marks=pytest.mark.slow),  # spawns two processes importing torch
    ],
    ids=["sequential", "parallel-folds"],
)
def test_one_progress_bar_per_fold_and_logs_above_them(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], parallel: int, fold_bars: list[str]
) -> None:
    config = tiny_config(
        synth_dir, tmp_path, threads=2, **{"classifier.train.epochs": 2, "classifier.parallel_folds": parallel}
    )
    stderr = _run_classifier_stage(config, capsys)
    screen = _screen(stderr)
    bars = [m.group(1) for line in screen if (m := _BAR.match(line))]
    # one finished bar per fold (or over the folds) and one for the refit: no bar per epoch, none drawn twice
    assert sorted(bars) == [*fold_bars, "classifier refit"], screen
    for line in screen:
        if _BAR.match(line):  # each finished: all its batches, its last epoch in the postfix
            assert "100%|" in line and " INFO " not in line, line
            last = {1: "epoch 2/2", 2: "fold 0 epoch 2/2 · fold 1 epoch 2/2"}[parallel]
            assert re.search(last if "fold" in line else r"epoch (\d)/\1", line), line  # refit: median best epoch
    # the epoch logs reached the terminal, each on its own line: none was written into a bar
    epoch_logs = [line for line in screen if re.search(r" INFO training\.loop: classifier fold \d epoch \d", line)]
    assert len(epoch_logs) == 4, screen  # 2 folds x 2 epochs
    assert all(line[:4].isdigit() for line in epoch_logs), epoch_logs  # the timestamp starts the line
    segments = [seg for line in stderr.split("\n") for seg in line.split("\r")]
    assert not [seg for seg in segments if "%|" in seg and " INFO " in seg]
