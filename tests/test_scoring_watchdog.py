"""Tests for cascade/scoring/watchdog.py and the stall timeout of ``score_folder``: stuck runs fail, slow ones end."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cascade.results import ImagePrediction
from cascade.scoring import ScoreOptions, StalledError, StallWatchdog, dump_threads, list_images, score_folder
from tests.fixtures.scoring import FakePredictor

IMAGES = 6


class StallingPredictor:
    """A ``FakePredictor`` whose calls after the first ``ok_calls`` block on ``release`` (a stuck inference).

    Args:
        release: set it to let the blocked calls finish (always do, or the test leaves a thread behind).
        ok_calls: calls answered before the predictor gets stuck.
    """

    def __init__(self, release: threading.Event, ok_calls: int = 0) -> None:
        self.release = release
        self.ok_calls = ok_calls
        self.fake = FakePredictor()

    def predict(
        self, images: Sequence[np.ndarray], image_ids: Sequence[str] | None = None, mode: str = "cascade"
    ) -> list[ImagePrediction]:
        if len(self.fake.calls) >= self.ok_calls:
            self._stuck_in_first_infer()
        return self.fake.predict(images, image_ids, mode)

    def _stuck_in_first_infer(self) -> None:
        self.release.wait(timeout=60)


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``IMAGES`` small random PNGs."""
    folder = tmp_path_factory.mktemp("watchdog_images")
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        Image.fromarray(rng.integers(0, 255, (32, 64, 3), dtype=np.uint8)).save(folder / f"img_{i}.png")
    return folder


def test_stalled_predictor_raises_with_thread_dump_and_output_stays_resumable(
    tmp_path: Path, small_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One of two predictors hangs in its first call: the run fails within the stall timeout, not never."""
    out = tmp_path / "sub.csv"
    release = threading.Event()
    predictors = [FakePredictor(), StallingPredictor(release)]
    caplog.set_level(logging.ERROR, logger="cascade.scoring.watchdog")
    try:
        with pytest.raises(StalledError, match="made no progress") as info:
            score_folder(
                small_dir, out, predictors, options=ScoreOptions(batch_size=1, stall_timeout_s=0.5, fsync=False)
            )
    finally:
        release.set()
    error = info.value
    assert error.what == "folder scoring" and error.timeout_s == 0.5 and error.idle_s >= 0.5
    assert len(error.stuck) == 1 and error.stuck[0] in list_images(small_dir)  # the stuck predictor's image
    assert f"still waiting for {error.stuck[0]}:" in str(error)
    assert "_stuck_in_first_infer" in error.thread_dump  # where the stuck thread is
    assert "Thread predict_" in error.thread_dump and "Thread MainThread" in error.thread_dump
    assert any(r.levelno == logging.ERROR and "no progress" in r.getMessage() for r in caplog.records)

    reference = tmp_path / "ref.csv"
    options = ScoreOptions(batch_size=1, fsync=False)
    score_folder(small_dir, reference, FakePredictor(), options=options)
    resumed = score_folder(small_dir, out, FakePredictor(), options=options)
    assert resumed.complete and resumed.resumed < IMAGES
    assert out.read_bytes() == reference.read_bytes()


def test_stall_after_progress_is_caught_too(tmp_path: Path, small_dir: Path) -> None:
    release = threading.Event()
    try:
        with pytest.raises(StalledError):
            options = ScoreOptions(batch_size=1, stall_timeout_s=0.5)
            score_folder(small_dir, tmp_path / "s.csv", StallingPredictor(release, 2), options=options)
    finally:
        release.set()
    assert len(tmp_path.joinpath("s.csv").read_text().splitlines()) == 1 + 2 * 4  # header + the 2 finished images


def test_slow_but_progressing_run_is_not_stalled(tmp_path: Path, small_dir: Path) -> None:
    """Every batch takes 0.3 s, the whole run ~1.8 s: longer than the 1.5 s timeout, but never idle that long."""
    options = ScoreOptions(batch_size=1, stall_timeout_s=1.5, fsync=False)
    summary = score_folder(small_dir, tmp_path / "slow.csv", FakePredictor(delay=0.3), options=options)
    assert summary.complete and summary.scored == len(list_images(small_dir)) == IMAGES


def test_no_stall_timeout_waits(tmp_path: Path, small_dir: Path) -> None:
    options = ScoreOptions(stall_timeout_s=None, fsync=False)
    summary = score_folder(small_dir, tmp_path / "sub.csv", FakePredictor(), options=options)
    assert summary.complete


@pytest.mark.parametrize("timeout", [0, -1.0, True, "600", float("nan")])
def test_bad_stall_timeout_is_refused(timeout: object) -> None:
    with pytest.raises(ValueError, match="stall timeout"):
        StallWatchdog(timeout)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stall timeout"):
        ScoreOptions(stall_timeout_s=timeout)  # type: ignore[arg-type]


def test_watchdog_result_passes_results_and_errors_through() -> None:
    watchdog = StallWatchdog(5.0, what="test")
    with ThreadPoolExecutor(1) as pool:
        assert watchdog.result(pool.submit(lambda: 42)) == 42
        # a TimeoutError raised *by the work* is the work's error, not a stall
        failing: Future[None] = pool.submit(_raise_timeout)
        with pytest.raises(TimeoutError, match="from the work"):
            watchdog.result(failing)


def _raise_timeout() -> None:
    raise TimeoutError("from the work")


def test_progress_from_other_threads_extends_the_wait() -> None:
    """Progress recorded elsewhere (other batches finishing) keeps a long wait alive; silence ends it."""
    watchdog = StallWatchdog(0.4, what="test")
    done = threading.Event()

    def beat() -> None:
        for _ in range(8):
            time.sleep(0.1)
            watchdog.progress()
        done.set()

    with ThreadPoolExecutor(2) as pool:
        pool.submit(beat)
        assert watchdog.result(pool.submit(lambda: done.wait(5) and "finished")) == "finished"
        with pytest.raises(StalledError, match="test made no progress"):
            watchdog.result(pool.submit(threading.Event().wait, 1.5))


def test_dump_threads_names_every_thread() -> None:
    started, stop = threading.Event(), threading.Event()

    def parked() -> None:
        started.set()
        stop.wait(5)

    thread = threading.Thread(target=parked, name="parked-thread", daemon=True)
    thread.start()
    started.wait(5)
    try:
        dump = dump_threads()
    finally:
        stop.set()
        thread.join(5)
    assert "Thread parked-thread (daemon)" in dump and "in parked" in dump
    assert "test_dump_threads_names_every_thread" in dump  # the calling thread's own stack


def _items(values: list[object], pause_after: int | None = None, error: Exception | None = None) -> Iterator[object]:
    """``values`` one by one; then ``error`` raised; ``pause_after``: block (5 s) before that item instead."""
    for i, value in enumerate(values):
        if i == pause_after:
            time.sleep(5)
        yield value
    if error is not None:
        raise error


def test_iterate_passes_items_and_errors_through() -> None:
    watchdog = StallWatchdog(5.0, what="test")
    assert list(watchdog.iterate(_items([1, 2, 3]))) == [1, 2, 3]
    with pytest.raises(KeyError, match="from the source"):
        list(watchdog.iterate(_items([1], error=KeyError("from the source"))))
    assert list(StallWatchdog(None).iterate(_items(["off"]))) == ["off"]


def test_iterate_raises_when_the_next_item_stalls_naming_what_is_awaited() -> None:
    watchdog = StallWatchdog(0.5, what="stream", advice="look elsewhere")
    seen = []
    with pytest.raises(StalledError, match=r"stream made no progress .*still waiting for b, c: look elsewhere") as info:
        for item in watchdog.iterate(_items(["a", "b"], pause_after=1), stuck=lambda: ["b", "c"]):
            seen.append(item)
    assert seen == ["a"] and info.value.stuck == ("b", "c")


def test_many_stuck_names_are_shortened() -> None:
    names = [f"img_{i}.png" for i in range(20)]
    message = str(StalledError("run", 12.0, 10.0, "", names))
    assert "img_7.png and 12 more" in message and "img_8.png" not in message


def test_iterate_stops_reading_when_the_caller_stops() -> None:
    pulled = []

    def source() -> Iterator[int]:
        for i in range(1000):
            pulled.append(i)
            yield i

    items = StallWatchdog(5.0, what="reader").iterate(source())
    assert next(items) == 0
    items.close()
    for thread in threading.enumerate():
        if thread.name == "reader results":
            thread.join(5)
            assert not thread.is_alive()
    assert len(pulled) <= 3  # the one handed over, the one queued, the one the reader held when it saw the stop
