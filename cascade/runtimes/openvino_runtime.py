"""OpenVINO (CPU) runtime over the IR (or ONNX) files written by ``cascade.export``.

``"openvino"`` pins ``INFERENCE_PRECISION_HINT = f32`` (OpenVINO would otherwise run bf16 on CPUs
with AMX/AVX512-BF16, silently changing the numbers); ``"openvino-bf16"`` asks for bf16 and is only
offered where the CPU has native bf16. Threads: ``INFERENCE_NUM_THREADS = threads``, one stream, the
latency hint and no CPU pinning (pinned OpenVINO threads would fight torch's and ONNX Runtime's pools
living in the same process).

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

from cascade.runtimes.base import Runtime, cpu_supports_bf16, resolve_threads
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


class OpenVinoRuntime(Runtime):
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
        }
        self._called: set[Hashable] = set()
        with construction_lock():
            self._core = ov.Core()
            self._classifier = self._compile(files["classifier"])
            self._segmenters = {
                int(key.removeprefix("segmenter_")): self._compile(path)
                for key, path in files.items()
                if key.startswith("segmenter_")
            }
            self.class_ids = tuple(sorted(self._segmenters))
            self.warmup_ms = self._warm_up(warmup_side) if serial_warmup_enabled() else 0.0

    def _compile(self, path: str | Path) -> object:
        model = self._core.read_model(str(Path(path)))
        compiled = self._core.compile_model(model, "CPU", self._config)
        return compiled.create_infer_request()

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

        return first_call(self._called, key, call)

    def classify(self, batch: np.ndarray) -> np.ndarray:
        """``(N, 3, H, W)`` -> ``(N, 4)`` probabilities."""
        return self._run("classifier", self._classifier, batch)

    def segment(self, class_id: int, batch: np.ndarray) -> np.ndarray:
        """``(N, 3, H, W)`` -> ``(N, H, W)`` probabilities of ``class_id``'s segmenter."""
        self._check_class(class_id)
        return self._run(class_id, self._segmenters[class_id], batch)[:, 0]

    def close(self) -> None:
        """Drop the compiled models."""
        self._segmenters.clear()
