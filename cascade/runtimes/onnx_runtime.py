"""ONNX Runtime (CPU) runtime over the files written by ``cascade.export.export_onnx``.

Sessions are created with ``intra_op_num_threads = threads`` and ``inter_op_num_threads = 1``
(sequential execution), and with idle spinning of the pool's workers disabled: the predictor calls
its networks one after the other and spends the time in between in numpy/OpenCV pre- and
post-processing, so spinning workers would only steal cores from that work and from other runtimes
living in the same process. Each session owns one pool of ``threads`` threads, but only one session
runs at a time, so the process never has more than ``threads`` busy inference threads.

Memory: all sessions share one process-wide CPU arena (``create_and_register_allocator`` +
``session.use_env_allocators``) instead of one arena per session, so five networks at 256x1600 hold
the activations of the largest one, not of all five (measured: peak RSS 0.9 GB instead of 2.3 GB for
four FPN-resnet18 segmenters at batch 4).

Per-shape memory (``cascade.runtimes.shapes``): a call above ``RELEASE_ABOVE_PIXELS`` runs with arena
shrinkage, so the chunks it grew the arena by go back to the system afterwards; the memory-pattern cache
(allocation plans kept per input shape) is off, as ONNX Runtime advises for dynamic shapes.

Cold start: like the OpenVINO runtime, sessions are created under
``cascade.runtimes.warmup.ENGINE_LOCK`` and each runs one tiny inference there, so predictors of one
process never make their first ``session.run`` at the same time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np

from cascade.runtimes.base import EngineRuntime, resolve_threads
from cascade.runtimes.shapes import is_oversized
from cascade.runtimes.warmup import (
    DEFAULT_WARMUP_SIDE,
    construction_lock,
    first_call,
    serial_warmup_enabled,
    warmup_input,
)

__all__ = ["OnnxRuntime", "ort_session"]

logger = logging.getLogger(__name__)
_shared_arena: bool | None = None


def _register_shared_arena() -> bool:
    """Register one CPU arena allocator for the process (once); False if this onnxruntime cannot."""
    global _shared_arena
    if _shared_arena is None:
        import onnxruntime as ort

        try:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
            _shared_arena = True
        except (AttributeError, RuntimeError, ort.capi.onnxruntime_pybind11_state.Fail) as err:
            logger.warning("onnxruntime: no shared arena (%s); each session keeps its own", err)
            _shared_arena = False
    return _shared_arena


def ort_session(path: str | Path, threads: int) -> object:
    """An ``onnxruntime.InferenceSession`` on CPU with the thread settings of the module docstring."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_mem_pattern = False  # a plan per input shape, kept for good
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if _register_shared_arena():
        options.add_session_config_entry("session.use_env_allocators", "1")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _shrink_arena() -> object:
    """Run options that shrink the CPU arena at the end of the run (free chunks go back to the system)."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


class OnnxRuntime(EngineRuntime):
    """ONNX Runtime inference of exported models (outputs are probabilities, sigmoid included).

    Args:
        files: ``"classifier"`` and ``"segmenter_<id>"`` -> ``.onnx`` path, as ``export_onnx`` returns.
        threads: intra-op threads per session (default: torch's thread count).
        warmup_side: height and width of the warm-up inputs where the models leave them dynamic
            (a multiple of the bundle's stride).
    """

    def __init__(
        self, files: Mapping[str, str | Path], *, threads: int | None = None, warmup_side: int = DEFAULT_WARMUP_SIDE
    ) -> None:
        if "classifier" not in files:
            raise ValueError(f"files must include 'classifier'; got keys {sorted(files)}")
        self.name = "onnx"
        self.device = "cpu"
        self.precision = "fp32"
        self.threads = resolve_threads(threads)
        self._called: set[Hashable] = set()
        with construction_lock():
            self._classifier = ort_session(files["classifier"], self.threads)
            self._segmenters = {
                int(key.removeprefix("segmenter_")): ort_session(path, self.threads)
                for key, path in files.items()
                if key.startswith("segmenter_")
            }
            self.class_ids = tuple(sorted(self._segmenters))
            self.warmup_ms = self._warm_up(warmup_side) if serial_warmup_enabled() else 0.0

    def _warm_up(self, side: int) -> float:
        """One tiny inference per session (caller holds ``ENGINE_LOCK``); returns the milliseconds spent."""
        start = time.perf_counter()
        sessions: list[tuple[Hashable, object]] = [("classifier", self._classifier), *self._segmenters.items()]
        for key, session in sessions:
            shape = [dim if isinstance(dim, int) else None for dim in session.get_inputs()[0].shape]
            self._run(key, session, warmup_input(shape, side))
        ms = (time.perf_counter() - start) * 1e3
        logger.debug("onnx: serial warm-up of %d sessions in %.1f ms", len(sessions), ms)
        return ms

    def _run(self, key: Hashable, session: object, batch: np.ndarray) -> np.ndarray:
        name = session.get_inputs()[0].name
        feed = {name: np.ascontiguousarray(batch, dtype=np.float32)}
        options = _shrink_arena() if is_oversized(batch) else None
        return first_call(self._called, key, lambda: session.run(None, feed, options)[0])
