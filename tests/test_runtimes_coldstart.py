"""Tests for cascade/runtimes/warmup.py: predictors of one process never make their first engine call together.

Issue 14: two single-thread OpenVINO predictors whose first ``InferRequest.infer`` ran at the same time
deadlocked in about one cold run of ten. The stress test repeats that situation in fresh processes, each
under a hard timeout, and must never hang.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

from cascade.bundle import LoadedBundle, load_bundle
from cascade.export import bundle_cache_dir, cached_export
from cascade.predictor import CascadePredictor
from cascade.runtimes import cpu_supports_bf16, create_runtime
from cascade.runtimes.warmup import ENGINE_LOCK, first_call, set_serial_warmup, warmup_input

_NEEDS_ORT = pytest.mark.skipif(find_spec("onnxruntime") is None, reason="onnxruntime not installed (extra 'export')")
_NEEDS_OV = pytest.mark.skipif(find_spec("openvino") is None, reason="openvino not installed (extra 'export')")
ENGINES = [pytest.param("onnx", marks=_NEEDS_ORT), pytest.param("openvino", marks=_NEEDS_OV)]

ROOT = Path(__file__).resolve().parents[1]
COLD_RUNS = 6
"""Fresh processes in the stress test (~5-7 s each on 2 busy cores: ~40 s in all)."""
RUN_TIMEOUT_S = 60.0
"""Hard limit per process; a healthy one takes a few seconds."""

_COLD_START = """
import faulthandler, sys, threading
faulthandler.dump_traceback_later({dump_after}, exit=True)  # a hang prints every stack and fails the run
import numpy as np
from cascade.predictor import CascadePredictor

bundle, cache, runtime = sys.argv[1:4]
predictors = [
    CascadePredictor.from_bundle(bundle, device="cpu", runtime=runtime, threads=1, cache_dir=cache) for _ in range(2)
]
image = np.random.default_rng(0).integers(0, 255, (128, 256, 3), dtype=np.uint8)
barrier = threading.Barrier(2)
answers = []

def first_predict(predictor):
    barrier.wait()  # both first calls at the same moment, as two predictor threads of `cascade predict` do
    answers.append(predictor.predict([image], mode="segment_all"))

threads = [threading.Thread(target=first_predict, args=(p,)) for p in predictors]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert len(answers) == 2, answers
print("cold start ok", [p.runtime.name for p in predictors], [round(p.runtime.warmup_ms, 1) for p in predictors])
"""


@_NEEDS_OV
def test_two_openvino_predictors_cold_start_concurrently_without_hanging(
    tiny_bundle_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``COLD_RUNS`` fresh processes: two predictors each, first predict on both threads at once; none may hang."""
    cache = tmp_path_factory.mktemp("coldstart-cache")
    bundle = load_bundle(tiny_bundle_path)
    cached_export(bundle, "openvino", bundle_cache_dir(bundle, cache))  # once here, not in every process
    runtime = "openvino-bf16" if cpu_supports_bf16() else "openvino"  # bf16 is the one that hung
    script = _COLD_START.format(dump_after=RUN_TIMEOUT_S - 5)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for run in range(COLD_RUNS):
        try:
            done = subprocess.run(
                [sys.executable, "-c", script, str(tiny_bundle_path), str(cache), runtime],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"cold start {run + 1}/{COLD_RUNS} hung for {RUN_TIMEOUT_S:.0f} s:\n{exc.stderr}")
        assert done.returncode == 0, f"cold start {run + 1}/{COLD_RUNS} failed:\n{done.stderr[-4000:]}"
        assert f"cold start ok ['{runtime}', '{runtime}']" in done.stdout


@pytest.mark.parametrize("engine", ENGINES)
def test_construction_warms_every_network_up(
    engine: str, confident_bundle: LoadedBundle, predictor_cache: Path
) -> None:
    runtime = create_runtime(
        engine, confident_bundle, threads=1, cache_dir=bundle_cache_dir(confident_bundle, predictor_cache)
    )
    assert runtime.warmup_ms > 0
    assert runtime._called == {"classifier", *confident_bundle.manifest.class_ids}


@pytest.mark.parametrize("engine", ENGINES)
def test_construction_waits_for_the_engine_lock(
    engine: str, confident_bundle: LoadedBundle, predictor_cache: Path
) -> None:
    """A runtime built while another thread holds ``ENGINE_LOCK`` (e.g. warming up) finishes only after it."""
    cache = bundle_cache_dir(confident_bundle, predictor_cache)
    create_runtime(engine, confident_bundle, threads=1, cache_dir=cache)  # export outside the timed part
    built = []
    with ENGINE_LOCK:
        thread = threading.Thread(
            target=lambda: built.append(create_runtime(engine, confident_bundle, threads=1, cache_dir=cache))
        )
        thread.start()
        thread.join(timeout=3)
        assert thread.is_alive() and not built  # waits for the lock rather than compiling alongside
    thread.join(timeout=60)
    assert len(built) == 1 and built[0].warmup_ms > 0


@pytest.mark.parametrize("engine", ENGINES)
def test_switching_the_serial_warmup_off_skips_it(
    engine: str, confident_bundle: LoadedBundle, predictor_cache: Path
) -> None:
    """The switch ``bench/bench_coldstart.py`` uses to measure the hang: no warm-up, no first-call lock."""
    set_serial_warmup(False)
    try:
        runtime = create_runtime(
            engine, confident_bundle, threads=1, cache_dir=bundle_cache_dir(confident_bundle, predictor_cache)
        )
        assert runtime.warmup_ms == 0.0 and not runtime._called
        predictor = CascadePredictor.from_runtime(confident_bundle.manifest, runtime)
        assert len(predictor.predict([np.zeros((64, 96), np.uint8)], mode="segment_all")) == 1
        assert not runtime._called
    finally:
        set_serial_warmup(True)


def test_first_call_takes_the_lock_once_per_key() -> None:
    done: set[object] = set()
    owned = []

    def call() -> int:
        owned.append(ENGINE_LOCK._is_owned())  # RLock: True when this thread holds it
        return 7

    assert first_call(done, "classifier", call) == 7 and done == {"classifier"}
    assert first_call(done, "classifier", call) == 7
    assert first_call(done, 3, call) == 7 and done == {"classifier", 3}
    assert owned == [True, False, True]


@pytest.mark.parametrize(
    ("shape", "side", "expected"),
    [
        ((None, 3, None, None), 32, (1, 3, 32, 32)),
        ((None, 3, None, None), 64, (1, 3, 64, 64)),
        ((2, 3, 128, None), 32, (2, 3, 128, 32)),
        ((-1, 3, 0, 16), 32, (1, 3, 32, 16)),
    ],
)
def test_warmup_input_sizes_dynamic_axes(shape: tuple, side: int, expected: tuple) -> None:
    batch = warmup_input(shape, side)
    assert batch.shape == expected and batch.dtype == np.float32 and not batch.any()


@pytest.mark.parametrize("side", [0, -32, 32.0, True])
def test_warmup_input_refuses_bad_sides(side: object) -> None:
    with pytest.raises(ValueError, match="warm-up side"):
        warmup_input((None, 3, None, None), side)  # type: ignore[arg-type]
