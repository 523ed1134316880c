"""The run's workspace: configuration, run folder, data (annotations, labels, folds, image store), distributed
context and the builders of the networks described by the configuration. Every stage starts from one.
"""

from __future__ import annotations

import csv
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cascade.constants import CLASS_IDS
from cascade.dataset import stratified_kfold
from cascade.formats import Annotations, read_annotations
from cascade.manifest import Normalization
from cascade.rle import decode
from training.config import PipelineConfig
from training.data import ImageStore
from training.distributed import DistContext

__all__ = ["Workspace", "build_classifier", "build_segmenter", "open_workspace", "seed_everything"]

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_classifier(config: PipelineConfig) -> nn.Module:
    """The classifier the configuration describes (``models.create_classifier``)."""
    from models import create_classifier

    spec = config.classifier
    return create_classifier(spec.backbone, num_classes=len(CLASS_IDS), pretrained=spec.pretrained, **spec.kwargs)


def build_segmenter(config: PipelineConfig, class_id: int, pretrained: bool | str | Path | None = None) -> nn.Module:
    """The binary segmenter of one class as the configuration describes it (``models.create_segmenter``).

    Args:
        config: the recipe.
        class_id: the class (``segmenter.class_kwargs`` may give it its own keyword arguments).
        pretrained: overrides ``segmenter.pretrained`` (e.g. a weights file to start the encoder from).
    """
    from models import create_segmenter

    spec = config.segmenter
    source = spec.pretrained if pretrained is None else pretrained
    return create_segmenter(spec.arch, spec.encoder, pretrained=source, **spec.kwargs_for(class_id))


@dataclass
class Workspace:
    """Everything a stage needs.

    Attributes:
        config: the recipe.
        run_dir: output folder of the run.
        data_dir: training data folder.
        ctx: distributed context.
        annotations: ground truth of every training image (clean ones included).
        labels: ``(N, 4)`` bool presence, in ``annotations.image_ids`` order.
        folds: ``n_folds`` pairs ``(train_ids, val_ids)``.
        store: image reader at the network scale.
        normalization: input normalisation.
    """

    config: PipelineConfig
    run_dir: Path
    data_dir: Path
    ctx: DistContext
    annotations: Annotations
    labels: np.ndarray
    folds: list[tuple[list[str], list[str]]]
    store: ImageStore
    normalization: Normalization

    @property
    def image_ids(self) -> tuple[str, ...]:
        """All training image ids."""
        return self.annotations.image_ids

    def labels_of(self, image_ids: list[str]) -> np.ndarray:
        """``(len(image_ids), 4)`` bool labels of the given images."""
        index = {image_id: i for i, image_id in enumerate(self.annotations.image_ids)}
        return self.labels[[index[i] for i in image_ids]]

    def mask_reader(self, class_id: int) -> Callable[[str], np.ndarray]:
        """Callable giving an image's full-size ``(H, W)`` bool mask of ``class_id``."""
        k = CLASS_IDS.index(class_id)

        def read(image_id: str) -> np.ndarray:
            if image_id not in self.annotations.rles:
                raise KeyError(f"unknown image id {image_id!r} ({len(self.annotations)} images annotated)")
            return decode(self.annotations.rles[image_id][k], self.store.full_shape(image_id))

        return read

    def all_masks(self, image_id: str) -> np.ndarray:
        """Full-size ``(4, H, W)`` bool masks of an image."""
        return self.annotations.masks(image_id, self.store.full_shape(image_id))

    @property
    def tune_split(self) -> tuple[list[str], list[str]]:
        """``(train_ids, val_ids)`` of the fold that early-stops the segmenters and tunes the thresholds."""
        return self.folds[self.config.data.tune_fold]


def open_workspace(
    config: PipelineConfig, run_dir: str | Path, ctx: DistContext, *, write_folds: bool = True
) -> Workspace:
    """Read the data folder of ``config.data``, split it into folds and prepare the image store.

    Args:
        write_folds: write ``RUN_DIR/folds.csv`` (on the main process); helper processes skip it.

    Raises:
        FileNotFoundError: the annotations file or images folder is missing.
    """
    data_dir = Path(config.data.dir)
    annotations_path, images_dir = data_dir / config.data.annotations, data_dir / config.data.images
    if not annotations_path.is_file():
        raise FileNotFoundError(
            f"annotations not found: {annotations_path} (make synthetic data with `cascade synth --out {data_dir}`)"
        )
    if not images_dir.is_dir():
        raise FileNotFoundError(f"images folder not found: {images_dir}")
    annotations = read_annotations(annotations_path, images_dir=images_dir)
    if config.data.limit is not None:
        annotations = annotations.subset(annotations.image_ids[: config.data.limit])
    folds = stratified_kfold(annotations, config.data.n_folds, config.seed)
    run_dir = Path(run_dir)
    if ctx.is_main and write_folds:
        run_dir.mkdir(parents=True, exist_ok=True)
        fold_of = {image_id: k for k, (_, val) in enumerate(folds) for image_id in val}
        with (run_dir / "folds.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["ImageId", "fold"])
            writer.writerows((image_id, fold_of[image_id]) for image_id in annotations.image_ids)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    logger.info(
        "data %s: %d images, class counts %s, %d folds",
        data_dir, len(annotations), annotations.class_counts(), len(folds),
    )  # fmt: skip
    return Workspace(
        config=config,
        run_dir=run_dir,
        data_dir=data_dir,
        ctx=ctx,
        annotations=annotations,
        labels=annotations.labels(),
        folds=folds,
        store=ImageStore(images_dir, scale=config.input.scale, cache=config.data.cache_images),
        normalization=Normalization(mean=config.input.mean, std=config.input.std),
    )
