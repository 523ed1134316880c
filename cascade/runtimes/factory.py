"""Runtime names, which of them this machine can run, and the factory that builds one for a bundle.

| name | engine | devices | precision |
|---|---|---|---|
| ``torch`` | torch eager | cpu, cuda | fp32 (the parity reference) |
| ``torch-bf16`` | torch autocast + channels_last | cpu with native bf16, cuda with bf16 | bf16 |
| ``torch-fp16`` | torch autocast + channels_last | cuda | fp16 |
| ``onnx`` | ONNX Runtime, CPU provider | cpu | fp32 |
| ``openvino`` | OpenVINO, precision pinned to f32 | cpu | fp32 |
| ``openvino-bf16`` | OpenVINO with the bf16 hint | cpu with native bf16 | bf16 |

ONNX and OpenVINO runtimes load the bundle's cached exports (``cascade.export.cached_export``) and warm
up serially at construction with inputs of the bundle's stride (``cascade.runtimes.warmup``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

from cascade.bundle import LoadedBundle
from cascade.constants import RUNTIME_NAMES
from cascade.runtimes.base import Runtime, cpu_supports_bf16

__all__ = ["RUNTIME_NAMES", "available_runtimes", "create_runtime"]


def _cuda_bf16() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def available_runtimes(device: str = "cpu") -> list[str]:
    """Runtime names that can run on ``device`` on this machine (installed engines, bf16 support)."""
    if device.startswith("cuda"):
        return ["torch", "torch-fp16"] + (["torch-bf16"] if _cuda_bf16() else [])
    bf16 = cpu_supports_bf16()
    names = ["torch"] + (["torch-bf16"] if bf16 else [])
    if importlib.util.find_spec("onnxruntime") is not None:
        names.append("onnx")
    if importlib.util.find_spec("openvino") is not None:
        names += ["openvino"] + (["openvino-bf16"] if bf16 else [])
    return names


def _torch(precision: str) -> Callable[..., Runtime]:
    def build(bundle: LoadedBundle, device: str, threads: int | None, cache_dir: Path | None) -> Runtime:
        from cascade.runtimes.torch_runtime import TorchRuntime

        return TorchRuntime(bundle.classifier, bundle.segmenters, device=device, precision=precision, threads=threads)

    return build


def _onnx(bundle: LoadedBundle, device: str, threads: int | None, cache_dir: Path | None) -> Runtime:
    from cascade.export import cached_export
    from cascade.runtimes.onnx_runtime import OnnxRuntime

    files = cached_export(bundle, "onnx", cache_dir)
    return OnnxRuntime(files, threads=threads, warmup_side=bundle.manifest.input_policy.stride)


def _openvino(precision: str) -> Callable[..., Runtime]:
    def build(bundle: LoadedBundle, device: str, threads: int | None, cache_dir: Path | None) -> Runtime:
        from cascade.export import cached_export
        from cascade.runtimes.openvino_runtime import OpenVinoRuntime

        files = cached_export(bundle, "openvino", cache_dir)
        side = bundle.manifest.input_policy.stride
        return OpenVinoRuntime(files, precision=precision, threads=threads, warmup_side=side)

    return build


_FACTORIES: dict[str, Callable[..., Runtime]] = {
    "torch": _torch("fp32"),
    "torch-bf16": _torch("bf16"),
    "torch-fp16": _torch("fp16"),
    "onnx": _onnx,
    "openvino": _openvino("fp32"),
    "openvino-bf16": _openvino("bf16"),
}


def create_runtime(
    name: str,
    bundle: LoadedBundle,
    *,
    device: str = "cpu",
    threads: int | None = None,
    cache_dir: str | Path | None = None,
) -> Runtime:
    """Build runtime ``name`` for ``bundle``.

    Args:
        name: one of ``RUNTIME_NAMES``.
        bundle: the loaded bundle (torch runtimes call its modules; others export them once).
        device: ``"cpu"`` or ``"cuda[:i]"`` (already resolved, not ``"auto"``).
        threads: intra-op threads (default: torch's thread count).
        cache_dir: bundle cache directory for exports (default: ``cascade.export.bundle_cache_dir``).

    Raises:
        ValueError: unknown name, or a runtime that cannot run on ``device``/this CPU.
    """
    if name not in _FACTORIES:
        raise ValueError(f"unknown runtime {name!r}; allowed: {[*RUNTIME_NAMES, 'auto']}")
    if device.startswith("cuda") and not name.startswith("torch"):
        raise ValueError(f"runtime {name!r} runs on CPU only; on {device!r} use one of {available_runtimes(device)}")
    return _FACTORIES[name](bundle, device, threads, None if cache_dir is None else Path(cache_dir))
