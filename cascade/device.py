"""Torch devices by name: ``"auto"`` resolved in this one place (CUDA when torch sees it, else the CPU)."""

from __future__ import annotations

__all__ = ["cuda_available", "resolve_device", "uses_gpu"]


def cuda_available() -> bool:
    """True when torch sees a CUDA device."""
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``; other values are checked and returned.

    Raises:
        ValueError: an unknown name, or CUDA asked for where there is none.
    """
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device == "cpu" or device.startswith("cuda"):
        if device.startswith("cuda") and not cuda_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
        return device
    raise ValueError(f"unknown device {device!r}; allowed: 'auto', 'cpu', 'cuda', 'cuda:<index>'")


def uses_gpu(device: str) -> bool:
    """Whether work on ``device`` would run on a GPU (``"auto"``: when CUDA is available), without checking it."""
    return cuda_available() if device == "auto" else device.startswith("cuda")
