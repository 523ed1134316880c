"""Network and loss factories: timm classifiers, smp segmenters, losses. Knows nothing of the cascade."""

from __future__ import annotations

from models.classifier import create_classifier
from models.ensemble import EnsembleMean
from models.losses import LOSS_NAMES, create_loss
from models.pretrained import PretrainedWeightsError, load_weights_file
from models.segmenter import create_segmenter, segmenter_archs

__all__ = [
    "LOSS_NAMES",
    "EnsembleMean",
    "PretrainedWeightsError",
    "create_classifier",
    "create_loss",
    "create_segmenter",
    "load_weights_file",
    "segmenter_archs",
]
