"""Constants of the Severstal task, named once."""

from __future__ import annotations

__all__ = [
    "CLASS_IDS",
    "CLASS_NAMES",
    "IMAGE_HEIGHT",
    "IMAGE_SHAPE",
    "IMAGE_WIDTH",
    "NUM_CLASSES",
    "RUNTIME_NAMES",
]

NUM_CLASSES: int = 4
"""Number of defect classes."""

CLASS_IDS: tuple[int, int, int, int] = (1, 2, 3, 4)
"""Class ids as they appear in every file format and API (1-based); array index ``k`` is class ``k + 1``."""

CLASS_NAMES: tuple[str, str, str, str] = ("pits", "vertical_marks", "scratches", "blotches")
"""Short names for the four classes, after their look in the real images."""

IMAGE_HEIGHT: int = 256
IMAGE_WIDTH: int = 1600
IMAGE_SHAPE: tuple[int, int] = (IMAGE_HEIGHT, IMAGE_WIDTH)
"""Shape ``(H, W)`` of a Severstal image."""

RUNTIME_NAMES: tuple[str, ...] = ("torch", "torch-bf16", "torch-fp16", "onnx", "openvino", "openvino-bf16")
"""Every inference runtime ``cascade.runtimes.create_runtime`` builds (plus ``"auto"`` in the predictor)."""
