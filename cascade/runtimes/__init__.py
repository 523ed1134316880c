"""Inference runtimes: torch eager (fp32, bf16/fp16 autocast), ONNX Runtime and OpenVINO.

``create_runtime(name, bundle)`` builds one; ``select_runtime(bundle)`` times those this machine can
run and keeps the fastest that passes parity against torch fp32 (``runtime="auto"``).
"""

from __future__ import annotations

from cascade.runtimes.base import PRECISIONS, Runtime, cpu_model, cpu_supports_bf16, resolve_device, resolve_threads
from cascade.runtimes.factory import RUNTIME_NAMES, available_runtimes, create_runtime
from cascade.runtimes.parity import MIN_MASK_AGREEMENT, PARITY_TOLERANCE, Outputs, Parity, compare, run_outputs
from cascade.runtimes.select import RuntimeReport, RuntimeTrial, machine_key, probe_batch, select_runtime

__all__ = [
    "MIN_MASK_AGREEMENT",
    "PARITY_TOLERANCE",
    "PRECISIONS",
    "RUNTIME_NAMES",
    "Outputs",
    "Parity",
    "Runtime",
    "RuntimeReport",
    "RuntimeTrial",
    "available_runtimes",
    "compare",
    "cpu_model",
    "cpu_supports_bf16",
    "create_runtime",
    "machine_key",
    "probe_batch",
    "resolve_device",
    "resolve_threads",
    "run_outputs",
    "select_runtime",
]
