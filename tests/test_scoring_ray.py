"""Tests for cascade/scoring/ray_engine.py: the Ray Data engine writes what the local engine writes, and a stuck
actor fails the run instead of hanging it.

The tests share one local Ray instance (2 CPUs, no dashboard): its start-up dominates their time.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from cascade.results import ImagePrediction
from cascade.scoring import (
    RayUnavailableError,
    ScoreOptions,
    ScoreProgress,
    StalledError,
    errors_path,
    list_images,
    score_folder_ray,
)
from tests.fixtures import scoring as scoring_fixtures
from tests.fixtures.scoring import BAD_FILES, REFERENCE_BATCH, SCORE_N, FakePredictor, TinyReference


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """A local Ray instance for the session (2 CPUs, no dashboard, worker logs not forwarded)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    # The actors unpickle test-defined predictors; send their code along instead of importing ``tests`` there.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.cloudpickle.register_pickle_by_value(scoring_fixtures)
    yield
    ray.shutdown()


class StuckOnImage:
    """A ``FakePredictor`` (built on the actor) that blocks on batches holding ``image_id`` until ``release``
    exists (a stuck runtime; at most ``limit_s``, so the actor is freed even if the test fails)."""

    def __init__(self, image_id: str, release: Path, limit_s: float = 60.0) -> None:
        self.image_id, self.release, self.limit_s = image_id, release, limit_s
        self.fake = FakePredictor()

    def __call__(self) -> StuckOnImage:  # the predictor factory: a fresh predictor per actor
        return StuckOnImage(self.image_id, self.release, self.limit_s)

    def predict(
        self, images: Sequence[np.ndarray], image_ids: Sequence[str] | None = None, mode: str = "cascade"
    ) -> list[ImagePrediction]:
        deadline = time.monotonic() + self.limit_s
        while self.image_id in (image_ids or ()) and not self.release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.fake.predict(images, image_ids, mode)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_ray_engine_equals_local_engine(
    tmp_path: Path, bad_score_dir: Path, tiny_bundle_path: Path, tiny_reference: TinyReference, ray_local: None
) -> None:
    out = tmp_path / "ray.csv"
    ticks: list[ScoreProgress] = []
    summary = score_folder_ray(
        bad_score_dir,
        out,
        tiny_bundle_path,
        options=ScoreOptions(batch_size=REFERENCE_BATCH),
        actors=(1, 2),
        threads=1,
        runtime="torch",
        progress=ticks.append,
    )
    assert summary.engine == "ray" and summary.complete
    assert (summary.scored, summary.failed) == (SCORE_N, len(BAD_FILES))
    assert ticks and ticks[-1].done == SCORE_N + len(BAD_FILES)
    assert {"decode", "classifier", "segmenters"} <= summary.stage_seconds.keys()
    assert out.read_bytes() == tiny_reference.submission
    assert errors_path(out).read_bytes() == tiny_reference.errors


def test_missing_ray_is_a_clear_error(tmp_path: Path, score_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RayUnavailableError, match=r"pip install 'steel-cascade\[ray\]'"):
        score_folder_ray(score_dir, tmp_path / "s.csv")
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_stuck_actor_fails_the_run_naming_the_stuck_images(tmp_path: Path, score_dir: Path, ray_local: None) -> None:
    """The first batch never comes back: the driver raises within the stall timeout, naming that batch's images
    (the actor's start-up counts against the timeout too, and the stuck batch is the first one either way)."""
    names = list_images(score_dir)
    release = tmp_path / "release"
    out = tmp_path / "stuck.csv"
    try:
        with pytest.raises(StalledError, match=r"Ray folder scoring made no progress .*ray stack") as info:
            score_folder_ray(
                score_dir,
                out,
                options=ScoreOptions(batch_size=2, stall_timeout_s=3.0, fsync=False),
                actors=1,
                predictor_factory=StuckOnImage(names[0], release),
            )
    finally:
        release.touch()  # frees the actor; its result ends the engine's reader thread, which shuts the dataset down
        for thread in threading.enumerate():
            if thread.name == "Ray folder scoring results":
                thread.join(60)
    error = info.value
    assert error.stuck == tuple(names[:2]) and error.timeout_s == 3.0
    assert f"still waiting for {names[0]}, {names[1]}" in str(error)
    assert out.read_text().count("\n") == 1  # the header only: nothing was committed, the run resumes from scratch
