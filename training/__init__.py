"""Training of the cascade: classifier folds, hard-negative mining, per-class segmenters, threshold tuning,
evaluation and packaging into a bundle. Entry point: ``cascade train --config configs/NAME.yaml``
(``training.cli``, running ``training.pipeline``); each stage also runs on its own with
``--stage NAME``.

The names below load on first use (PEP 562), so ``training.cli`` (``cascade train``'s registration, imported
at every ``cascade --help``) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.config import PipelineConfig
    from training.pipeline import STAGES, PipelineResult, run_pipeline
    from training.recipe import load_config

__all__ = ["STAGES", "PipelineConfig", "PipelineResult", "load_config", "run_pipeline"]

_LAZY = {
    "STAGES": "training.pipeline",
    "PipelineConfig": "training.config",
    "PipelineResult": "training.pipeline",
    "run_pipeline": "training.pipeline",
    "load_config": "training.recipe",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")
