"""Shared pytest set-up. Fixtures live in ``tests/fixtures/<area>.py``, loaded here as plugins."""

from __future__ import annotations

import os

# Must be set before timm / smp / huggingface_hub are imported: pretrained loads fail at once offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: more threads only add overhead
if "CASCADE_CACHE_DIR" not in os.environ:  # keep exports and runtime decisions out of the user's ~/.cache
    import atexit
    import shutil
    import tempfile

    os.environ["CASCADE_CACHE_DIR"] = tempfile.mkdtemp(prefix="cascade-test-cache-")
    atexit.register(shutil.rmtree, os.environ["CASCADE_CACHE_DIR"], ignore_errors=True)

from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.data",
    "tests.fixtures.models",
    "tests.fixtures.predictor",
    "tests.fixtures.scoring",
    "tests.fixtures.training",
    "tests.fixtures.service",
    "tests.fixtures.browser",
]

REAL_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "severstal-real"


@pytest.fixture(scope="session")
def real_dir() -> Path:
    """The real Severstal slice at ``../shared/severstal-real``; skips the test when absent."""
    if not (REAL_DIR / "annotations-1000.csv").is_file():
        pytest.skip(f"real Severstal slice not found at {REAL_DIR}")
    return REAL_DIR
