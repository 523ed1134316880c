"""Training of the cascade: classifier folds, hard-negative mining, per-class segmenters, threshold tuning,
evaluation and packaging into a bundle. Entry point: ``cascade train --config configs/NAME.yaml``
(``training.pipeline``); each stage also runs on its own as ``python -m training.<module>``.
"""

from __future__ import annotations

from training.config import STAGES, PipelineConfig
from training.pipeline import PipelineResult, run_pipeline
from training.recipe import load_config

__all__ = ["STAGES", "PipelineConfig", "PipelineResult", "load_config", "run_pipeline"]
