"""Steel-surface defect cascade: classify which defects are present, then segment only those."""

from __future__ import annotations

from cascade.constants import CLASS_IDS, CLASS_NAMES, IMAGE_HEIGHT, IMAGE_SHAPE, IMAGE_WIDTH, NUM_CLASSES

__version__ = "0.1.0"

__all__ = [
    "CLASS_IDS",
    "CLASS_NAMES",
    "IMAGE_HEIGHT",
    "IMAGE_SHAPE",
    "IMAGE_WIDTH",
    "NUM_CLASSES",
    "__version__",
]
