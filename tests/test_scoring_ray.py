"""Tests for cascade/scoring/ray_engine.py: the Ray Data engine writes what the local engine writes.

One test starts Ray (a local instance with 2 CPUs, no dashboard): start-up dominates its time.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cascade.scoring import RayUnavailableError, ScoreProgress, errors_path, score_folder_ray
from tests.fixtures.scoring import BAD_FILES, REFERENCE_BATCH, SCORE_N, TinyReference


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """A local Ray instance for the session (2 CPUs, no dashboard, worker logs not forwarded)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


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
        batch_size=REFERENCE_BATCH,
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
