"""The run's workspace: configuration, run folder, data (annotations, labels, folds, image store), distributed
context and the builders of the networks described by the configuration. Every stage starts from one.
"""

from __future__ import annotations

import csv
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cascade.classes import ClassSet
from cascade.dataset import stratified_kfold
from cascade.datasource import LabelledSet, open_labelled
from cascade.formats import Annotations
from cascade.manifest import Normalization
from cascade.rle import decode
from training.config import PipelineConfig
from training.data import ImageStore
from training.distributed import DistContext
from training.paths import RunPaths

__all__ = ["Workspace", "build_classifier", "build_segmenter", "open_workspace", "seed_everything"]

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_classifier(config: PipelineConfig, num_classes: int) -> nn.Module:
    """The classifier the configuration describes (``models.create_classifier``), ``num_classes`` outputs."""
    from models import create_classifier

    spec = config.classifier
    return create_classifier(spec.backbone, num_classes=num_classes, pretrained=spec.pretrained, **spec.kwargs)


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
        data: the labelled data set as read (all its images and splits).
        annotations: ground truth of every image the run uses (clean ones included): ``train_split`` plus
            ``val_split`` when set, else all.
        labels: ``(N, C)`` bool presence, in ``annotations.image_ids`` order.
        folds: ``n_folds`` pairs ``(train_ids, val_ids)``.
        store: image reader at the network scale.
        normalization: input normalisation.
    """

    config: PipelineConfig
    run_dir: Path
    data_dir: Path
    ctx: DistContext
    data: LabelledSet
    annotations: Annotations
    labels: np.ndarray
    folds: list[tuple[list[str], list[str]]]
    store: ImageStore
    normalization: Normalization

    @property
    def paths(self) -> RunPaths:
        """Every file of the run folder."""
        return RunPaths(self.run_dir)

    @property
    def image_ids(self) -> tuple[str, ...]:
        """All training image ids."""
        return self.annotations.image_ids

    @property
    def classes(self) -> ClassSet:
        """The data's classes (ids, names, colours)."""
        return self.data.classes

    @property
    def class_ids(self) -> tuple[int, ...]:
        """The data's class ids, in array order."""
        return self.data.classes.ids

    @property
    def image_size(self) -> tuple[int, int] | None:
        """The most common ``(H, W)`` of the run's images where the data records sizes, else the first image's."""
        shapes = [self.annotations.shapes[i] for i in self.image_ids if i in self.annotations.shapes]
        if shapes:
            return Counter(shapes).most_common(1)[0][0]
        return self.store.full_shape(self.image_ids[0]) if self.image_ids else None

    @property
    def segmenter_class_ids(self) -> tuple[int, ...]:
        """Classes whose segmenters this run trains: ``segmenter.class_ids``, or every class."""
        return self.config.segmenter.class_ids or self.class_ids

    def labels_of(self, image_ids: list[str]) -> np.ndarray:
        """``(len(image_ids), C)`` bool labels of the given images."""
        index = {image_id: i for i, image_id in enumerate(self.annotations.image_ids)}
        return self.labels[[index[i] for i in image_ids]]

    def mask_reader(self, class_id: int) -> Callable[[str], np.ndarray]:
        """Callable giving an image's full-size ``(H, W)`` bool mask of ``class_id``."""
        k = self.classes.index(class_id)

        def read(image_id: str) -> np.ndarray:
            if image_id not in self.annotations.rles:
                raise KeyError(f"unknown image id {image_id!r} ({len(self.annotations)} images annotated)")
            return decode(self.annotations.rles[image_id][k], self.store.full_shape(image_id))

        return read

    def all_masks(self, image_id: str) -> np.ndarray:
        """Full-size ``(C, H, W)`` bool masks of an image."""
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
        FileNotFoundError: the data folder, annotations file or images folder is missing.
        ValueError: bad data (``cascade.datasource.DataSourceError``), an unknown split or class id.
    """
    data_dir = Path(config.data.dir)
    if not data_dir.exists():
        raise FileNotFoundError(
            f"annotations not found: no data at {data_dir} (make synthetic data with `cascade synth --out {data_dir}`)"
        )
    data = open_labelled(
        data_dir,
        classes=config.data.classes,
        annotations=config.data.annotations,
        images=config.data.images,
        mask_encoding=config.data.mask_encoding,
    )
    bad = sorted(set(config.segmenter.class_ids) - set(data.classes.ids))
    if bad:
        raise ValueError(
            f"segmenter.class_ids {bad} are not classes of the data; its classes are {list(data.classes.ids)}"
        )
    annotations, folds = _split(config, data)
    images_dir = data.images_dir
    run_dir = Path(run_dir)
    if ctx.is_main and write_folds:
        run_dir.mkdir(parents=True, exist_ok=True)
        fold_of = {image_id: k for k, (_, val) in enumerate(folds) for image_id in val}
        with RunPaths(run_dir).folds_csv.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["ImageId", "fold"])
            writer.writerows((image_id, fold_of[image_id]) for image_id in annotations.image_ids)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    logger.info(
        "data %s (%s): %d images, classes %s, class counts %s, %d folds",
        data_dir, data.kind, len(annotations), list(data.classes.names), annotations.class_counts(), len(folds),
    )  # fmt: skip
    return Workspace(
        config=config,
        run_dir=run_dir,
        data_dir=data_dir,
        ctx=ctx,
        data=data,
        annotations=annotations,
        labels=annotations.labels(),
        folds=folds,
        store=ImageStore(images_dir, scale=config.input.scale, cache=config.data.cache_images),
        normalization=Normalization(mean=config.input.mean, std=config.input.std),
    )


def _split_ids(data: LabelledSet, name: str | None, where: str) -> tuple[str, ...]:
    if name is None:
        return data.image_ids
    if name not in data.splits:
        raise ValueError(f"{where}={name!r} is not a split of {data.root}; its splits are {sorted(data.splits)}")
    return tuple(data.splits[name])


def _split(config: PipelineConfig, data: LabelledSet) -> tuple[Annotations, list[tuple[list[str], list[str]]]]:
    """The run's annotations and folds (see ``DataConfig``): K stratified folds over the training images, or
    with ``val_split`` that split as fold ``tune_fold`` and K-1 stratified folds over ``train_split``."""
    cfg = config.data
    train_ids = _split_ids(data, cfg.train_split, "data.train_split")
    if cfg.limit is not None:
        train_ids = train_ids[: cfg.limit]
    if cfg.val_split is None:
        annotations = data.annotations.subset(train_ids)
        return annotations, stratified_kfold(annotations, cfg.n_folds, config.seed)
    val_ids = _split_ids(data, cfg.val_split, "data.val_split")
    if cfg.limit is not None:
        val_ids = val_ids[: max(1, cfg.limit // 4)]
    overlap = set(train_ids) & set(val_ids)
    if overlap:
        raise ValueError(f"{len(overlap)} images are in both splits, e.g. {sorted(overlap)[:5]}")
    if cfg.n_folds < 3:
        raise ValueError(f"data.n_folds={cfg.n_folds} must be >= 3 with data.val_split (2+ folds over train)")
    annotations = data.annotations.subset(train_ids + val_ids)
    inner = stratified_kfold(annotations, cfg.n_folds - 1, config.seed, image_ids=list(train_ids))
    folds = [(list(tr), list(va)) for tr, va in inner]
    folds.insert(cfg.tune_fold, (list(train_ids), list(val_ids)))
    return annotations, folds
