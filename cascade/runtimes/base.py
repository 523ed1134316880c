"""The runtime protocol: how the predictor asks a backend to run its networks.

A runtime holds the classifier and the per-class segmenters of one bundle in some inference engine
(torch eager, ONNX Runtime, OpenVINO) and answers in numpy, so the predictor's gate, tiling, TTA and
post-processing are the same whatever runs the networks. Inputs are normalised, padded float32
batches ``(N, 3, H, W)``; outputs are *probabilities* (sigmoid applied), float32.

Threads: every runtime takes ``threads``. ``None`` means "as many as torch uses"
(``torch.get_num_threads()``, itself set by ``OMP_NUM_THREADS`` or the core count), so two runtimes
in one process (e.g. during ``runtime="auto"`` selection) each size their pool to the same budget
and, because the predictor calls them one after the other, never run more threads than that at once.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from abc import ABC, abstractmethod
from collections.abc import Hashable
from pathlib import Path

import numpy as np

from cascade.device import cuda_available, resolve_device

__all__ = [
    "PRECISIONS",
    "EngineRuntime",
    "Runtime",
    "cpu_model",
    "cpu_supports_bf16",
    "cuda_available",
    "resolve_device",
    "resolve_threads",
]

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
"""Compute precisions a runtime may use; anything but fp32 is judged with the looser parity bound."""

_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


class Runtime(ABC):
    """One inference backend holding a bundle's classifier and segmenters.

    Attributes:
        name: runtime name as accepted by ``create_runtime`` (e.g. ``"onnx"``).
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:1"``...).
        precision: one of ``PRECISIONS``.
        threads: intra-op threads the runtime uses.
        class_ids: class ids with a segmenter.
        warmup_ms: time its construction spent in the serial warm-up (``cascade.runtimes.warmup``), 0 if none.
    """

    name: str
    device: str
    precision: str
    threads: int
    class_ids: tuple[int, ...]
    warmup_ms: float = 0.0

    @abstractmethod
    def classify(self, batch: np.ndarray) -> np.ndarray:
        """Classifier probabilities.

        Args:
            batch: ``(N, 3, H, W)`` float32, normalised and padded.

        Returns:
            ``(N, 4)`` float32 probabilities.
        """

    @abstractmethod
    def segment(self, class_id: int, batch: np.ndarray) -> np.ndarray:
        """Probability maps of one class's segmenter.

        Args:
            class_id: 1-based class id.
            batch: ``(N, 3, H, W)`` float32, normalised and padded.

        Returns:
            ``(N, H, W)`` float32 probabilities.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, most runtimes free on garbage collection
        """Release engine resources early (optional)."""

    def _check_class(self, class_id: int) -> None:
        if class_id not in self.class_ids:
            raise ValueError(f"unknown class id {class_id!r}; this runtime has segmenters for {list(self.class_ids)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device!r}, threads={self.threads})"


class EngineRuntime(Runtime):
    """A runtime over one engine handle per network (an ONNX Runtime session, an OpenVINO infer request).

    Subclasses fill ``_classifier`` and ``_segmenters`` (class id -> handle) and implement ``_run``; the
    classifier's key is ``"classifier"``, a segmenter's its class id.
    """

    _classifier: object
    _segmenters: dict[int, object]

    @abstractmethod
    def _run(self, key: Hashable, handle: object, batch: np.ndarray) -> np.ndarray:
        """One network on ``batch`` ``(N, 3, H, W)``: its output probabilities, float32."""

    def classify(self, batch: np.ndarray) -> np.ndarray:
        """``(N, 3, H, W)`` -> ``(N, 4)`` probabilities."""
        return self._run("classifier", self._classifier, batch)

    def segment(self, class_id: int, batch: np.ndarray) -> np.ndarray:
        """``(N, 3, H, W)`` -> ``(N, H, W)`` probabilities of ``class_id``'s segmenter."""
        self._check_class(class_id)
        return self._run(class_id, self._segmenters[class_id], batch)[:, 0]

    def close(self) -> None:
        """Drop the networks."""
        self._segmenters.clear()


def resolve_threads(threads: int | None) -> int:
    """``threads`` checked (>= 1), or torch's current intra-op thread count when None."""
    if threads is None:
        import torch

        return max(1, int(torch.get_num_threads()))
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    return threads


def _cpuinfo(*keys: str) -> str | None:
    """The value of the first ``/proc/cpuinfo`` line starting with one of ``keys``; None without it (or the file)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(keys):
                return line.split(":", 1)[1].strip()
    return None


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo``), e.g. ``"AMD EPYC"``; None where the system does not say."""
    return _cpuinfo("model name")


@functools.cache
def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 or AMX on x86, BF16 on Arm)."""
    flags = set((_cpuinfo("flags", "Features") or "").split())
    if any(flag in flags for flag in _BF16_CPU_FLAGS):
        return True
    if platform.machine() in ("aarch64", "arm64") and "bf16" in flags:
        return True
    if not flags:  # no /proc/cpuinfo (macOS, Windows): ask oneDNN
        import torch

        with contextlib.suppress(AttributeError, RuntimeError):
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False
