"""Synthetic Severstal-like data: 1600x256 grayscale steel images with four defect classes and RLE masks.

``generate_dataset(out_dir, n, seed)`` writes ``train_images/*.jpg`` and ``train.csv`` (Kaggle layout);
``synth_stats(dir)`` measures a set's class mix and defect areas against the real train set (``real_stats()``),
``folder_image_stats(dir)`` its per-image appearance against the real images (``real_image_stats()``), and
``discriminator_auc`` how well a classifier on that appearance tells synthetic from real images.
"""

from __future__ import annotations

from cascade.synth.config import BALANCED_COMBINATIONS, PROFILES, SynthConfig, synth_config
from cascade.synth.discriminator import discriminator_auc
from cascade.synth.generator import SynthDataset, SynthImage, generate_dataset, generate_image, image_ids
from cascade.synth.realism import (
    IMAGE_STAT_NAMES,
    folder_image_stats,
    format_image_stats,
    image_stats,
    real_image_stats,
)
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
    "IMAGE_STAT_NAMES",
    "PROFILES",
    "DatasetStats",
    "SynthConfig",
    "SynthDataset",
    "SynthImage",
    "discriminator_auc",
    "folder_image_stats",
    "format_image_stats",
    "format_stats",
    "generate_dataset",
    "generate_image",
    "image_ids",
    "image_stats",
    "real_image_stats",
    "real_stats",
    "reference_stats",
    "stats_from_areas",
    "synth_config",
    "synth_stats",
]
