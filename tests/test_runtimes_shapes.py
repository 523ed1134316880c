"""Tests for cascade/runtimes/shapes.py: per-shape memory of the engine runtimes stays bounded.

The fast tests check the mechanisms on the tiny bundle (an oversized call releases the buffers, outputs
unchanged; OpenVINO's runtime cache is capped); the slow one feeds the demo bundle 200 distinct input
shapes in a subprocess and bounds its RSS growth.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import find_spec

import numpy as np
import pytest

import cascade.runtimes.shapes as shapes
from cascade.predictor import CascadePredictor
from cascade.runtimes.shapes import RUNTIME_CACHE_ENTRIES, is_oversized

_NEEDS_ORT = pytest.mark.skipif(find_spec("onnxruntime") is None, reason="onnxruntime not installed (extra 'export')")
_NEEDS_OV = pytest.mark.skipif(find_spec("openvino") is None, reason="openvino not installed (extra 'export')")

SHAPE_GROWTH_MB = 1000
"""RSS growth allowed for 200 distinct input shapes through the demo bundle on OpenVINO fp32 (measured in this test's
script: +2,008 MB with the plugin's default cache of 5000 entries, +748 MB with ``RUNTIME_CACHE_ENTRIES``)."""


@pytest.mark.parametrize(
    ("shape", "limit", "expected"),
    [
        ((1, 3, 64, 416), 64 * 416, False),  # exactly at the limit
        ((1, 3, 64, 417), 64 * 416, True),
        ((4, 3, 64, 416), 3 * 64 * 416, True),  # the batch counts
        ((4, 3, 64, 416), None, False),  # a batch of 4 Severstal images is far below the default
        ((1, 3, 1600, 1600), None, True),  # a 6400x6400 image at the demo bundle's scale 0.25
    ],
)
def test_is_oversized(shape: tuple[int, ...], limit: int | None, expected: bool) -> None:
    assert is_oversized(np.zeros(shape, dtype=np.float32), limit) is expected


def _batch(height: int, width: int, n: int = 1) -> np.ndarray:
    return np.random.default_rng(height * width + n).normal(size=(n, 3, height, width)).astype(np.float32)


@_NEEDS_OV
def test_openvino_replaces_the_request_after_an_oversized_call(
    runtime_predictors: dict[str, CascadePredictor], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = runtime_predictors["openvino"].runtime
    assert runtime._config["CPU_RUNTIME_CACHE_CAPACITY"] == RUNTIME_CACHE_ENTRIES
    monkeypatch.setattr(shapes, "RELEASE_ABOVE_PIXELS", 64 * 64)
    class_id = runtime.class_ids[0]
    small, large = _batch(32, 64), _batch(64, 96)
    before = runtime.segment(class_id, small)
    request, classifier = runtime._segmenters[class_id], runtime._classifier
    assert runtime._segmenters[class_id] is request  # a small call keeps its request
    large_out = runtime.segment(class_id, large)
    assert runtime._segmenters[class_id] is not request and runtime._classifier is classifier
    assert large_out.shape == (1, 64, 96)
    np.testing.assert_array_equal(runtime.segment(class_id, large), large_out)  # the fresh request: same answer
    np.testing.assert_array_equal(runtime.segment(class_id, small), before)
    probabilities = runtime.classify(small)
    runtime.classify(large)
    assert runtime._classifier is not classifier
    np.testing.assert_array_equal(runtime.classify(small), probabilities)


@_NEEDS_ORT
def test_onnx_shrinks_its_arena_after_an_oversized_call(
    runtime_predictors: dict[str, CascadePredictor], monkeypatch: pytest.MonkeyPatch
) -> None:
    import cascade.runtimes.onnx_runtime as onnx_runtime

    runtime = runtime_predictors["onnx"].runtime
    assert not runtime._classifier.get_session_options().enable_mem_pattern
    shrunk: list[object] = []
    original = onnx_runtime._shrink_arena

    def _counting() -> object:
        shrunk.append(original())
        return shrunk[-1]

    small, large = _batch(32, 64), _batch(64, 96)
    expected = runtime.classify(large)
    monkeypatch.setattr(onnx_runtime, "_shrink_arena", _counting)
    monkeypatch.setattr(shapes, "RELEASE_ABOVE_PIXELS", 64 * 64)
    runtime.classify(small)
    assert not shrunk
    np.testing.assert_array_equal(runtime.classify(large), expected)  # same answer with the arena shrinking
    assert len(shrunk) == 1


_GROWTH_SCRIPT = """
import json
import numpy as np, psutil
from cascade.predictor import CascadePredictor
p = CascadePredictor.from_bundle(None, device="cpu", runtime="openvino", threads=1)
rng = np.random.default_rng(0)
image = lambda h, w: rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
for _ in range(3):
    p.predict([image(256, 1600)], mode="segment_all")
rss = lambda: psutil.Process().memory_info().rss / 2**20
base = rss()
shapes = [(128 * (1 + i % 10), 128 * (1 + i // 10)) for i in range(200)]  # 200 network shapes at scale 0.25
peak = 0.0
for h, w in shapes:
    p.predict([image(h, w)], mode="segment_all")
    peak = max(peak, rss() - base)
print(json.dumps({"peak_mb": peak, "after_mb": rss() - base}))
"""


@pytest.mark.slow
@_NEEDS_OV
def test_many_input_shapes_keep_memory_bounded() -> None:
    """200 distinct input shapes (network inputs 32x32 to 320x640) through the demo bundle on OpenVINO, in a fresh
    process: RSS grows by less than ``SHAPE_GROWTH_MB`` (it grew by 2 GB with the plugin's default cache)."""
    result = subprocess.run(
        [sys.executable, "-c", _GROWTH_SCRIPT],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    growth = json.loads(result.stdout.strip().splitlines()[-1])
    assert growth["peak_mb"] < SHAPE_GROWTH_MB, growth
