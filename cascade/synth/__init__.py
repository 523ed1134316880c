"""Synthetic Severstal-like data: 1600x256 grayscale steel images with four defect classes and RLE masks.

``generate_dataset(out_dir, n, seed)`` writes ``train_images/*.jpg`` and ``train.csv`` (Kaggle layout);
``synth_stats(dir)`` measures a set against the real one (``real_stats()``).
"""

from __future__ import annotations

from cascade.synth.config import BALANCED_COMBINATIONS, PROFILES, SynthConfig, synth_config
from cascade.synth.generator import SynthDataset, SynthImage, generate_dataset, generate_image, image_ids
from cascade.synth.stats import (
    DatasetStats,
    format_stats,
    real_stats,
    reference_stats,
    stats_from_areas,
    synth_stats,
)

__all__ = [
    "BALANCED_COMBINATIONS",
    "PROFILES",
    "DatasetStats",
    "SynthConfig",
    "SynthDataset",
    "SynthImage",
    "format_stats",
    "generate_dataset",
    "generate_image",
    "image_ids",
    "real_stats",
    "reference_stats",
    "stats_from_areas",
    "synth_config",
    "synth_stats",
]
