"""Serial warm-up: predictors sharing a process never make their first engine call at the same time.

Why (issue 14): ``cascade predict`` runs two single-thread predictors side by side. In about one cold
run out of ten, both made their first ``InferRequest.infer`` at the same moment and hung for good: one
thread blocked in ``__cxa_guard_acquire`` inside ``_pyopenvino`` (a function-local static being
initialised by the other thread), the other waiting for the GIL, which the first one held. Such
first-use initialisation in a binding is harmless when it happens once, on one thread.

So every ONNX Runtime / OpenVINO runtime is built under ``ENGINE_LOCK`` (one process-wide lock) and,
still under it, runs one tiny inference through each of its networks (``warmup_input`` gives the
input); the first call of each network after that also takes the lock (``first_call``: one set
lookup per call afterwards), which covers any runtime that skipped the warm-up. Torch needs none of it.

``set_serial_warmup(False)`` switches all of this off. It exists only so that
``bench/bench_coldstart.py`` can measure the hang it prevents; never call it elsewhere.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractContextManager
from typing import TypeVar

import numpy as np

__all__ = [
    "DEFAULT_WARMUP_SIDE",
    "ENGINE_LOCK",
    "construction_lock",
    "first_call",
    "serial_warmup_enabled",
    "set_serial_warmup",
    "warmup_input",
]

T = TypeVar("T")

ENGINE_LOCK = threading.RLock()
"""Held while an engine runtime is built and warmed up, and around each network's first call."""

DEFAULT_WARMUP_SIDE: int = 32
"""Height and width of the warm-up input where the model leaves them dynamic (the default stride)."""

_serial = True


def set_serial_warmup(enabled: bool) -> None:
    """Turn the serial warm-up and first-call lock on (default) or off; for ``bench/bench_coldstart.py`` only."""
    global _serial
    _serial = bool(enabled)


def serial_warmup_enabled() -> bool:
    """True unless ``set_serial_warmup(False)`` was called."""
    return _serial


def construction_lock() -> AbstractContextManager[object]:
    """``ENGINE_LOCK``, to build and warm up a runtime under; a no-op when the serial warm-up is off."""
    return ENGINE_LOCK if _serial else contextlib.nullcontext()


def warmup_input(shape: Sequence[int | None], side: int = DEFAULT_WARMUP_SIDE) -> np.ndarray:
    """A zero float32 input for one warm-up inference.

    Args:
        shape: the model's input shape, ``None`` for a dynamic axis, e.g. ``(None, 3, None, None)``.
        side: size of dynamic axes after the first (the first, the batch, becomes 1); a multiple of the
            bundle's stride, so that the input is one the predictor could send.

    Returns:
        Zeros of the resolved shape, e.g. ``(1, 3, side, side)``.
    """
    if isinstance(side, bool) or not isinstance(side, int) or side < 1:
        raise ValueError(f"warm-up side must be a positive integer, got {side!r}")
    dims = [dim if dim is not None and dim > 0 else (1 if axis == 0 else side) for axis, dim in enumerate(shape)]
    return np.zeros(dims, dtype=np.float32)


def first_call(done: set[Hashable], key: Hashable, call: Callable[[], T]) -> T:
    """``call()``, under ``ENGINE_LOCK`` when ``key`` is not yet in ``done`` (it is added once the call returns).

    Args:
        done: the runtime's set of networks already called once.
        key: the network, e.g. ``"classifier"`` or a class id.
        call: the inference to run.
    """
    if key in done or not _serial:
        return call()
    with ENGINE_LOCK:
        result = call()
        done.add(key)
    return result
