"""OpenVINO (CPU) runtime over the IR (or ONNX) files written by ``cascade.export``.

``"openvino"`` pins ``INFERENCE_PRECISION_HINT = f32`` (OpenVINO would otherwise run bf16 on CPUs
with AMX/AVX512-BF16, silently changing the numbers); ``"openvino-bf16"`` asks for bf16 and is only
offered where the CPU has native bf16. Threads: ``INFERENCE_NUM_THREADS = threads``, one stream, the
latency hint and no CPU pinning (pinned OpenVINO threads would fight torch's and ONNX Runtime's pools
living in the same process).

Per-shape memory (``cascade.runtimes.shapes``): the plugin's cache of primitives compiled per input shape is
capped at ``RUNTIME_CACHE_ENTRIES`` (``CPU_RUNTIME_CACHE_CAPACITY``), and after a call above
``RELEASE_ABOVE_PIXELS`` the network gets a fresh infer request and its compiled model releases its
intermediate memory (``CompiledModel.release_memory``), so the buffers sized for that input go.

Cold start: the runtime is built under ``cascade.runtimes.warmup.ENGINE_LOCK`` and runs one tiny
inference per network there, after touching ``ov.Tensor(...).data`` once per process, so two predictors
of one process never make their first binding call at the same time (that hung, see
``cascade.runtimes.warmup``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np

from cascade.runtimes.base import EngineRuntime, cpu_supports_bf16, resolve_threads
from cascade.runtimes.shapes import RUNTIME_CACHE_ENTRIES, is_oversized
from cascade.runtimes.warmup import (
    DEFAULT_WARMUP_SIDE,
    ENGINE_LOCK,
    construction_lock,
    first_call,
    serial_warmup_enabled,
    warmup_input,
)

__all__ = ["OpenVinoRuntime"]

logger = logging.getLogger(__name__)

_HINTS = {"fp32": "f32", "bf16": "bf16"}
_tensor_touched = False


def _touch_tensor_once() -> None:
    """Create one ``ov.Tensor`` and read its ``.data`` (first-use initialisation in the binding), once per process."""
    global _tensor_touched
    with ENGINE_LOCK:
        if not _tensor_touched:
            import openvino as ov

            np.asarray(ov.Tensor(np.zeros((1,), dtype=np.float32)).data).sum()
            _tensor_touched = True


class OpenVinoRuntime(EngineRuntime):
    """OpenVINO inference of exported models (outputs are probabilities, sigmoid included).

    Args:
        files: ``"classifier"`` and ``"segmenter_<id>"`` -> ``.xml`` (IR) or ``.onnx`` path.
        precision: ``"fp32"`` (pinned) or ``"bf16"`` (needs native bf16).
        threads: ``INFERENCE_NUM_THREADS`` (default: torch's thread count).
        warmup_side: height and width of the warm-up inputs where the models leave them dynamic
            (a multiple of the bundle's stride).
    """

    def __init__(
        self,
        files: Mapping[str, str | Path],
        *,
        precision: str = "fp32",
        threads: int | None = None,
        warmup_side: int = DEFAULT_WARMUP_SIDE,
    ) -> None:
        import openvino as ov

        if precision not in _HINTS:
            raise ValueError(f"unknown OpenVINO precision {precision!r}; allowed: {list(_HINTS)}")
        if precision == "bf16" and not cpu_supports_bf16():
            raise ValueError("OpenVINO bf16 needs a CPU with native bf16 (avx512_bf16 or amx_bf16)")
        if "classifier" not in files:
            raise ValueError(f"files must include 'classifier'; got keys {sorted(files)}")
        self.name = "openvino" if precision == "fp32" else "openvino-bf16"
        self.device = "cpu"
        self.precision = precision
        self.threads = resolve_threads(threads)
        self._config = {
            "INFERENCE_PRECISION_HINT": _HINTS[precision],
            "INFERENCE_NUM_THREADS": self.threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "ENABLE_CPU_PINNING": False,
            "CPU_RUNTIME_CACHE_CAPACITY": RUNTIME_CACHE_ENTRIES,
        }
        self._called: set[Hashable] = set()
        self._compiled: dict[Hashable, object] = {}
        with construction_lock():
            self._core = ov.Core()
            self._classifier = self._compile("classifier", files["classifier"])
            class_ids = [int(key.removeprefix("segmenter_")) for key in files if key.startswith("segmenter_")]
            self._segmenters = {cid: self._compile(cid, files[f"segmenter_{cid}"]) for cid in class_ids}
            self.class_ids = tuple(sorted(self._segmenters))
            self.warmup_ms = self._warm_up(warmup_side) if serial_warmup_enabled() else 0.0

    def _compile(self, key: Hashable, path: str | Path) -> object:
        model = self._core.read_model(str(Path(path)))
        self._compiled[key] = self._core.compile_model(model, "CPU", self._config)
        return self._compiled[key].create_infer_request()

    def _warm_up(self, side: int) -> float:
        """One tiny inference per network (caller holds ``ENGINE_LOCK``); returns the milliseconds spent."""
        start = time.perf_counter()
        _touch_tensor_once()
        networks: list[tuple[Hashable, object]] = [("classifier", self._classifier), *self._segmenters.items()]
        for key, request in networks:
            shape = [None if d.is_dynamic else d.get_length() for d in request.model_inputs[0].get_partial_shape()]
            self._run(key, request, warmup_input(shape, side))
        ms = (time.perf_counter() - start) * 1e3
        logger.debug("%s: serial warm-up of %d networks in %.1f ms", self.name, len(networks), ms)
        return ms

    def _run(self, key: Hashable, request: object, batch: np.ndarray) -> np.ndarray:
        def call() -> np.ndarray:
            request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
            return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)

        out = first_call(self._called, key, call)
        if is_oversized(batch):  # hand back the buffers sized for this input: a fresh request, then release_memory
            compiled = self._compiled[key]
            if key == "classifier":
                self._classifier = compiled.create_infer_request()
            else:
                self._segmenters[key] = compiled.create_infer_request()
            compiled.release_memory()
        return out

    def close(self) -> None:
        """Drop the compiled models."""
        super().close()
        self._compiled.clear()
