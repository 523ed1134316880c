"""Tests for cascade/scoring/local.py: the local folder engine, its resume, cancel and unreadable-image handling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cascade.formats import Layout
from cascade.imageio import read_image
from cascade.scoring import (
    ResumeError,
    ScoreOptions,
    ScoreProgress,
    errors_path,
    list_images,
    read_mask_png,
    score_folder,
)
from cascade.scoring.masks import mask_png_path, overlay_path
from tests.fixtures.scoring import BAD_FILES, REFERENCE_BATCH, SCORE_N, FakePredictor, TinyReference

ROOT = Path(__file__).resolve().parents[1]
FAKE_BATCH = 2
FAKE_OPTIONS = ScoreOptions(batch_size=FAKE_BATCH)
FAKE_LONG = ScoreOptions(batch_size=FAKE_BATCH, layout=Layout.LONG)


def _rows(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines()[1:]]


@pytest.fixture(scope="module")
def fake_reference(tmp_path_factory: pytest.TempPathFactory, bad_score_dir: Path) -> tuple[bytes, bytes]:
    """Submission and errors bytes of an uninterrupted fake-predictor run over ``bad_score_dir``."""
    out = tmp_path_factory.mktemp("ref") / "sub.csv"
    summary = score_folder(
        bad_score_dir, out, FakePredictor(), options=ScoreOptions(batch_size=FAKE_BATCH, fsync=False)
    )
    assert summary.complete and summary.failed == len(BAD_FILES)
    return out.read_bytes(), errors_path(out).read_bytes()


def _expected(tiny_predictor, folder: Path, ids: list[str]) -> list:
    """``tiny_predictor.predict`` over the readable images in the engine's batches (listing slices)."""
    preds = []
    for start in range(0, len(ids), REFERENCE_BATCH):
        batch = [i for i in ids[start : start + REFERENCE_BATCH] if i not in BAD_FILES]
        preds += tiny_predictor.predict([read_image(folder / i) for i in batch], image_ids=batch)
    return preds


def test_real_cascade_submission_and_masks(bad_score_dir: Path, tiny_predictor, tiny_reference: TinyReference) -> None:
    summary = tiny_reference.summary
    ids = list_images(bad_score_dir)
    good = [i for i in ids if i not in BAD_FILES]
    assert (summary.total, summary.scored, summary.failed) == (SCORE_N + 2, SCORE_N, 2)
    assert summary.out_csv.read_text().splitlines()[0] == "ImageId_ClassId,EncodedPixels"
    rows = _rows(summary.out_csv)
    assert [r[0] for r in rows] == [f"{i}_{c}" for i in good for c in (1, 2, 3, 4)]
    expected = _expected(tiny_predictor, bad_score_dir, ids)
    assert [r[1] for r in rows] == [rle for pred in expected for rle in pred.rles]
    assert {"decode", "classifier", "segmenters", "encode", "write", "masks"} <= summary.stage_seconds.keys()
    from cascade.formats import check_submission

    assert check_submission(summary.out_csv, good) == []
    assert any(p.masks.any() for p in expected), "no predicted mask at all: the mask check below would be vacuous"
    for pred in expected:
        np.testing.assert_array_equal(read_mask_png(mask_png_path(tiny_reference.masks_dir, pred.image_id)), pred.masks)
        overlay = read_image(overlay_path(tiny_reference.masks_dir, pred.image_id))
        assert overlay.shape == (pred.height, pred.width, 3)


def test_unreadable_images_listed_not_fatal(tmp_path: Path, bad_score_dir: Path, fake_reference) -> None:
    out = tmp_path / "sub.csv"
    ticks: list[ScoreProgress] = []
    summary = score_folder(bad_score_dir, out, FakePredictor(), options=FAKE_OPTIONS, progress=ticks.append)
    assert summary.scored == SCORE_N and summary.failed == 2 and summary.complete
    assert [e.image_id for e in summary.errors] == sorted(BAD_FILES)
    assert summary.errors_csv == errors_path(out)
    lines = summary.errors_csv.read_text().splitlines()
    assert lines[0] == "file,reason" and [line.split(",")[0] for line in lines[1:]] == sorted(BAD_FILES)
    assert "not a recognised image" in lines[1] and "truncated" in lines[2].lower()
    assert len(_rows(out)) == 4 * SCORE_N
    assert ticks[-1].done == ticks[-1].total == SCORE_N + 2 and ticks[-1].failed == 2
    assert (out.read_bytes(), errors_path(out).read_bytes()) == fake_reference


def test_batches_are_listing_slices(tmp_path: Path, bad_score_dir: Path) -> None:
    fake = FakePredictor()
    score_folder(bad_score_dir, tmp_path / "s.csv", fake, options=ScoreOptions(batch_size=3))
    ids = list_images(bad_score_dir)
    slices = [[i for i in ids[s : s + 3] if i not in BAD_FILES] for s in range(0, len(ids), 3)]
    assert fake.calls == [s for s in slices if s]


def test_several_predictors_same_output(tmp_path: Path, bad_score_dir: Path, fake_reference) -> None:
    out = tmp_path / "sub.csv"
    fakes = [FakePredictor(delay=0.02), FakePredictor(delay=0.05), FakePredictor()]
    summary = score_folder(bad_score_dir, out, fakes, options=FAKE_OPTIONS, prefetch_batches=0)
    assert summary.complete and sum(len(f.calls) for f in fakes) == 4  # 8 files in batches of 2
    assert sum(1 for f in fakes if f.calls) >= 2, "batches did not run side by side"
    assert (out.read_bytes(), errors_path(out).read_bytes()) == fake_reference


@pytest.mark.parametrize("stop_after", [1, 3, 5])
def test_cancel_then_resume_is_byte_identical(tmp_path: Path, bad_score_dir: Path, fake_reference, stop_after) -> None:
    out = tmp_path / "sub.csv"
    cancel = threading.Event()

    def _stop(p: ScoreProgress) -> None:
        if p.done >= stop_after:
            cancel.set()

    first = score_folder(bad_score_dir, out, FakePredictor(), options=FAKE_OPTIONS, cancel=cancel, progress=_stop)
    assert first.cancelled and not first.complete and first.done >= stop_after
    fake = FakePredictor()
    second = score_folder(bad_score_dir, out, fake, options=FAKE_OPTIONS)
    assert second.complete and second.resumed == first.done
    assert second.done == second.total == SCORE_N + len(BAD_FILES)
    assert second.scored + first.scored == SCORE_N
    assert (out.read_bytes(), errors_path(out).read_bytes()) == fake_reference


@pytest.mark.parametrize("cut_from_end", [1, 7, 40, 200, 2000])
def test_partial_trailing_data_is_repaired(tmp_path: Path, bad_score_dir: Path, fake_reference, cut_from_end) -> None:
    out = tmp_path / "sub.csv"
    out.write_bytes(fake_reference[0][:-cut_from_end])
    errors_path(out).write_bytes(fake_reference[1])
    summary = score_folder(bad_score_dir, out, FakePredictor(), options=FAKE_OPTIONS)
    assert summary.resumed >= 1 and summary.complete
    assert (out.read_bytes(), errors_path(out).read_bytes()) == fake_reference


def test_existing_output_of_other_layout_refused_unless_overwrite(
    tmp_path: Path, bad_score_dir: Path, fake_reference
) -> None:
    out = tmp_path / "sub.csv"
    score_folder(bad_score_dir, out, FakePredictor(), options=FAKE_LONG)
    assert out.read_text().startswith("ImageId,ClassId,EncodedPixels\n")
    with pytest.raises(ResumeError, match="--overwrite"):
        score_folder(bad_score_dir, out, FakePredictor(), options=FAKE_OPTIONS)
    score_folder(bad_score_dir, out, FakePredictor(), options=ScoreOptions(batch_size=FAKE_BATCH, resume=False))
    assert (out.read_bytes(), errors_path(out).read_bytes()) == fake_reference


def test_long_layout_resume_is_byte_identical(tmp_path: Path, bad_score_dir: Path) -> None:
    ref = tmp_path / "ref.csv"
    score_folder(bad_score_dir, ref, FakePredictor(), options=FAKE_LONG)
    data = ref.read_bytes()
    out = tmp_path / "sub.csv"
    for cut in (len(data) // 3, len(data) // 2, len(data) - 5):
        out.write_bytes(data[:cut])
        score_folder(bad_score_dir, out, FakePredictor(), options=FAKE_LONG)
        assert out.read_bytes() == data, cut


def test_bad_arguments(tmp_path: Path, score_dir: Path) -> None:
    with pytest.raises(ValueError, match="workers=0"):
        score_folder(score_dir, tmp_path / "s.csv", FakePredictor(), workers=0)


_KILL_SCRIPT = """
import sys
from tests.fixtures.scoring import FakePredictor
from cascade.scoring import ScoreOptions, score_folder
options = ScoreOptions(batch_size=int(sys.argv[3]))
score_folder(sys.argv[1], sys.argv[2], FakePredictor(delay=0.05, hang_after=2), options=options)
"""


def test_kill_9_then_resume_is_byte_identical(tmp_path: Path, bad_score_dir: Path, fake_reference) -> None:
    out = tmp_path / "sub.csv"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", _KILL_SCRIPT, str(bad_score_dir), str(out), str(FAKE_BATCH)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:  # it hangs in its third batch
        if out.exists() and len(out.read_bytes().splitlines()) >= 1 + 4 * 3:  # header + three images
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL, "the scoring subprocess ended before it was killed"
    partial = out.read_bytes()
    assert 0 < len(partial) < len(fake_reference[0]), "the run was not interrupted midway"
    summary = score_folder(bad_score_dir, out, FakePredictor(), options=FAKE_OPTIONS)
    assert summary.resumed == 4 and summary.complete  # two batches of two: a bad file and three images
    assert (out.read_bytes(), errors_path(out).read_bytes()) == fake_reference
