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
from cascade.formats import Annotations, read_annotations
from cascade.manifest import Normalization
from cascade.rle import decode
from training.config import PipelineConfig
from training.distributed import DistContext
from training.image_store import ImageStore
from training.paths import RunPaths

__all__ = [
    "PseudoLabels",
    "Workspace",
    "build_classifier",
    "build_segmenter",
    "open_workspace",
    "read_pseudo_labels",
    "seed_everything",
]

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


@dataclass(frozen=True)
class PseudoLabels:
    """Pseudo-labelled images a round trains on besides the labelled ones (``training.pseudo_label``).

    Attributes:
        image_ids: the kept unlabelled images.
        labels: ``(P, C)`` bool presence (a class is present when its pseudo-mask is).
        targets: ``(P, C)`` float32 classifier targets: the labels (hard) or the teacher's probabilities (soft).
        rles: image id -> one RLE per class of its (hard) pseudo-mask at full size.
        shapes: image id -> full ``(H, W)``.
        soft_dir: folder of soft masks (``<image id>.npz``, ``masks`` ``(C, H, W)`` uint8 probability x 255) the
            segmenters train on instead of the hard masks; None for hard labels.
    """

    image_ids: tuple[str, ...]
    labels: np.ndarray
    targets: np.ndarray
    rles: dict[str, tuple[str, ...]]
    shapes: dict[str, tuple[int, int]]
    soft_dir: Path | None = None

    def hard_masks(self, image_id: str) -> np.ndarray:
        """Full-size ``(C, H, W)`` bool pseudo-masks of an image."""
        shape = self.shapes[image_id]
        return np.stack([decode(rle, shape) for rle in self.rles[image_id]])

    def soft_mask(self, image_id: str, k: int) -> np.ndarray:
        """Full-size ``(H, W)`` float32 soft pseudo-mask of class index ``k`` (``soft_dir`` must be set)."""
        with np.load(Path(self.soft_dir) / f"{image_id}.npz") as data:  # type: ignore[arg-type]
            return data["masks"][k].astype(np.float32) / 255.0


def read_pseudo_labels(path: str | Path, class_ids: tuple[int, ...], soft_dir: Path | None) -> PseudoLabels:
    """Read a round's ``pseudo_labels.csv`` (columns ``ImageId,height,width`` and per class ``label_<c>``,
    ``target_<c>``, ``rle_<c>``; written by ``training.pseudo_label``).

    Raises:
        ValueError: a column of one of ``class_ids`` is missing.
    """
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in class_ids if rows and f"label_{c}" not in rows[0]]
    if missing:
        raise ValueError(f"{path} has no columns for classes {missing}; delete the round folder and rerun")
    ids = tuple(r["ImageId"] for r in rows)
    width = len(class_ids)
    labels = np.array([[r[f"label_{c}"] == "1" for c in class_ids] for r in rows], dtype=bool).reshape(-1, width)
    targets = np.array([[float(r[f"target_{c}"]) for c in class_ids] for r in rows], dtype=np.float32)
    targets = targets.reshape(-1, width)
    rles = {r["ImageId"]: tuple(r[f"rle_{c}"] for c in class_ids) for r in rows}
    shapes = {r["ImageId"]: (int(r["height"]), int(r["width"])) for r in rows}
    return PseudoLabels(ids, labels, targets, rles, shapes, soft_dir)


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
        pseudo: pseudo-labelled images added to the training part of every fold (a pseudo-labelling round's
            workspace); never in a validation part, never in ``image_ids``/``labels``/``annotations``.
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
    pseudo: PseudoLabels | None = None

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

    @property
    def train_ids(self) -> tuple[str, ...]:
        """Every image a model may train on: ``image_ids`` plus the pseudo-labelled ones."""
        return self.image_ids + (self.pseudo.image_ids if self.pseudo is not None else ())

    def _rows(self, image_ids: list[str], labelled: np.ndarray, pseudo: np.ndarray | None) -> np.ndarray:
        index = {image_id: i for i, image_id in enumerate(self.annotations.image_ids)}
        extra = {image_id: i for i, image_id in enumerate(self.pseudo.image_ids)} if self.pseudo is not None else {}
        out = np.zeros((len(image_ids), labelled.shape[1]), dtype=labelled.dtype)
        for row, image_id in enumerate(image_ids):
            if image_id in index:
                out[row] = labelled[index[image_id]]
            elif image_id in extra and pseudo is not None:
                out[row] = pseudo[extra[image_id]]
            else:
                raise KeyError(f"unknown image id {image_id!r} ({len(self.annotations)} images annotated)")
        return out

    def labels_of(self, image_ids: list[str]) -> np.ndarray:
        """``(len(image_ids), C)`` bool labels of the given images (pseudo-labelled ones included)."""
        return self._rows(image_ids, self.labels, self.pseudo.labels if self.pseudo is not None else None)

    def targets_of(self, image_ids: list[str]) -> np.ndarray:
        """``(len(image_ids), C)`` float32 classifier targets: the labels, or a soft pseudo-label's probabilities."""
        pseudo = self.pseudo.targets if self.pseudo is not None else None
        return self._rows(image_ids, self.labels.astype(np.float32), pseudo)

    def mask_reader(self, class_id: int) -> Callable[[str], np.ndarray]:
        """Callable giving an image's full-size ``(H, W)`` mask of ``class_id``: bool, or float32 in [0, 1] for a
        soft pseudo-label."""
        k = self.classes.index(class_id)

        def read(image_id: str) -> np.ndarray:
            if image_id in self.annotations.rles:
                return decode(self.annotations.rles[image_id][k], self.store.full_shape(image_id))
            if self.pseudo is not None and image_id in self.pseudo.rles:
                if self.pseudo.soft_dir is not None:
                    return self.pseudo.soft_mask(image_id, k)
                return self.pseudo.hard_masks(image_id)[k]
            raise KeyError(f"unknown image id {image_id!r} ({len(self.annotations)} images annotated)")

        return read

    def all_masks(self, image_id: str) -> np.ndarray:
        """Full-size ``(C, H, W)`` bool masks of an image (a pseudo-labelled one's hard pseudo-masks)."""
        if self.pseudo is not None and image_id in self.pseudo.rles:
            return self.pseudo.hard_masks(image_id)
        return self.annotations.masks(image_id, self.store.full_shape(image_id))

    @property
    def tune_split(self) -> tuple[list[str], list[str]]:
        """``(train_ids, val_ids)`` of the fold that early-stops the segmenters and tunes the thresholds."""
        return self.folds[self.config.data.tune_fold]

    def open_other(self, folder: str | Path) -> LabelledSet:
        """Another labelled set with the run's classes, read as the recipe reads its data (held-out or stress
        images)."""
        data = self.config.data
        return open_labelled(folder, classes=self.classes, annotations=data.annotations, images=data.images,
                             mask_encoding=data.mask_encoding)  # fmt: skip

    def synthetic_set(self, root: Path, n: int, seed: int, profile: str = "real") -> tuple[Path, Annotations]:
        """``(images_dir, annotations)`` of ``n`` synthetic images of ``profile`` with ``seed`` in ``root``,
        generated on first use (``cascade.synth``)."""
        if not (root / "train.csv").is_file() or len(list((root / "train_images").glob("*.jpg"))) != n:
            from cascade.synth import generate_dataset, synth_config

            logger.info("generating %d synthetic images (profile %s, seed %d) in %s", n, profile, seed, root)
            generate_dataset(root, n, seed, config=synth_config(profile), progress=self.ctx.is_main, overwrite=True)
        images = root / "train_images"
        return images, read_annotations(root / "train.csv", images_dir=images)


def open_workspace(
    config: PipelineConfig, run_dir: str | Path, ctx: DistContext, *, write_folds: bool = True
) -> Workspace:
    """Read the data folder of ``config.data``, split it into folds and prepare the image store.

    In a pseudo-labelling round's folder (one with ``pseudo_labels.csv``) the round's pseudo-labelled images join
    the training part of every fold, read from the round's ``images/`` folder.

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
    paths = RunPaths(run_dir)
    pseudo = None
    if paths.pseudo_labels_csv.is_file():
        soft_dir = paths.soft_masks_dir if paths.soft_masks_dir.is_dir() else None
        pseudo = read_pseudo_labels(paths.pseudo_labels_csv, data.classes.ids, soft_dir)
        images_dir = paths.pseudo_images_dir
        folds = [(train + list(pseudo.image_ids), val) for train, val in folds]
        logger.info("pseudo-labelling round %s: %d pseudo-labelled images", run_dir, len(pseudo.image_ids))
    if ctx.is_main and write_folds:
        run_dir.mkdir(parents=True, exist_ok=True)
        fold_of = {image_id: k for k, (_, val) in enumerate(folds) for image_id in val}
        with paths.folds_csv.open("w", newline="") as f:
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
        store=ImageStore(
            images_dir, scale=config.input.scale, cache=config.data.cache_images, scale_x=config.input.scale_x
        ),
        normalization=Normalization(mean=config.input.mean, std=config.input.std),
        pseudo=pseudo,
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
