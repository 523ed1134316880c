"""Stage ``segmenter``: one binary segmenter per class.

Class ``c``'s segmenter trains on the training part of fold ``data.tune_fold``: the images that have
``c`` plus that class's mined negatives (``hard_negatives.csv``: hard ones and the random share), on random
crops (``segmenter.crop``) with the configured loss (``models.create_loss``), its encoder optionally
started from the trained classifier (``segmenter.init_from_classifier``). It is early-stopped on the
mean per-image Dice over the same kinds of images of the fold's validation part, at full size. An epoch is
the training list repeated up to ``train.min_samples`` samples, so rare classes get enough steps.

With ``segmenter.parallel_classes > 1`` on CPU (no torchrun), that many classes train at once in spawned
processes sharing the threads (``training.parallel``), the longest first (epochs x samples per epoch), under
one progress bar; each writes its ``class<id>/done.json`` as a sequential run does, with the same seeds.

Run on its own: ``cascade train --config configs/demo-cpu.yaml --stage segmenter [--out RUN_DIR]``
(needs ``hard_negatives.csv``); under ``torchrun`` each class trains with DDP.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from training.augment_copy_paste import DonorPool, uses_copy_paste
from training.config import SegmenterConfig, TrainConfig
from training.data import SegmenterDataset, build_augmentations, make_train_loader
from training.inference import segmenter_dice
from training.loop import ProgressFactory, fit
from training.mine_hard_negatives import read_hard_negatives
from training.parallel import JobKind, parallel_workers, train_in_processes
from training.workspace import Workspace, build_segmenter, seed_everything

__all__ = ["run", "segmenter_image_ids", "train_class"]

logger = logging.getLogger(__name__)

_CLASSES = JobKind(stage="segmenter", noun="class", plural="classes", setting="segmenter.parallel_classes")


def segmenter_image_ids(ws: Workspace, class_id: int, split_ids: Sequence[str]) -> list[str]:
    """The images of ``split_ids`` a class's segmenter uses: its positives, then its mined negatives."""
    path = ws.paths.hard_negatives_csv
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (run the 'hard_negatives' stage first)")
    negatives = {n.image_id for n in read_hard_negatives(path) if n.class_id == class_id}
    k = ws.classes.index(class_id)
    labels = ws.labels_of(list(split_ids))
    positives = [i for i, has in zip(split_ids, labels[:, k], strict=True) if has]
    return positives + [i for i in split_ids if i in negatives]


def _class_train(spec: SegmenterConfig, class_id: int) -> TrainConfig:
    """The training settings of one class's segmenter: ``train`` with its ``class_epochs``."""
    return dataclasses.replace(spec.train, epochs=spec.class_epochs.get(class_id, spec.train.epochs))


def _repeats(train_images: int, min_samples: int) -> int:
    """How often an epoch repeats the training list: enough for ``min_samples`` samples."""
    return max(1, math.ceil(min_samples / train_images))


def _start_weights(ws: Workspace) -> Path | None:
    """The trained classifier to start the encoder from (``segmenter.init_from_classifier``), else None.

    Raises:
        FileNotFoundError: the classifier stage has not run.
    """
    if not ws.config.segmenter.init_from_classifier:
        return None
    start = ws.paths.classifier_weights
    if not start.is_file():
        raise FileNotFoundError(f"{start} not found (run the 'classifier' stage first)")
    return start


def train_class(
    ws: Workspace, class_id: int, resume: bool = False, progress: ProgressFactory | None = None
) -> dict[str, float]:
    """Train the segmenter of ``class_id``; weights go to ``segmenter/class<id>/best.pt`` (``progress``: as
    ``fit`` takes it).

    Returns:
        ``best_epoch``, ``best_dice``, ``train_images``, ``val_images``.
    """
    from models import create_loss

    config = ws.config
    spec = config.segmenter
    train_split, val_split = ws.tune_split
    train_ids = segmenter_image_ids(ws, class_id, train_split)
    val_ids = segmenter_image_ids(ws, class_id, val_split)
    out = ws.paths.segmenter_class_dir(class_id)
    seed = config.seed + 100 * class_id
    seed_everything(seed)
    model = build_segmenter(config, class_id, pretrained=_start_weights(ws))
    if not train_ids:
        logger.warning("class %d has no training images in fold %d; its segmenter stays untrained", class_id,
                       config.data.tune_fold)  # fmt: skip
        if ws.ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
            untrained = {"model": model.state_dict(), "epoch": 0, "score": float("nan")}
            torch.save(untrained, ws.paths.segmenter_weights(class_id))
        return {"best_epoch": 0, "best_dice": float("nan"), "train_images": 0, "val_images": len(val_ids)}
    repeats = _repeats(len(train_ids), spec.train.min_samples)
    masks = ws.mask_reader(class_id)
    stride = config.input.stride
    pool = None
    if uses_copy_paste(config.augment):  # donors: every training image of the fold, any class
        pool = DonorPool.build(ws.store, train_split, ws.labels_of(train_split), ws.class_ids, ws.all_masks)
    transform = build_augmentations(config.augment, spec.crop, pool=pool, mask_class=class_id)
    train_ds = SegmenterDataset(
        ws.store, train_ids * repeats, masks, ws.normalization, transform, seed=seed, stride=stride
    )
    val_ds = SegmenterDataset(ws.store, val_ids, masks, ws.normalization, None, stride=stride)
    loader = make_train_loader(train_ds, ws.ctx, spec.train.batch_size, config.data.num_workers, seed)

    def validate(net: torch.nn.Module) -> dict[str, float]:
        return segmenter_dice(net, val_ds, ws.ctx, spec.train.batch_size)

    result = fit(
        model, loader, create_loss(spec.loss.name, **spec.loss.kwargs), _class_train(spec, class_id), out, ws.ctx,
        validate=validate if val_ids else None, monitor="dice", resume=resume, desc=f"segmenter {class_id}",
        progress=progress,
    )  # fmt: skip
    summary = {
        "best_epoch": result.best_epoch,
        "best_dice": result.best_score,
        "train_images": len(train_ids),
        "val_images": len(val_ids),
    }
    logger.info("segmenter %d: %s", class_id, summary)
    return summary


def _train_class_job(ws: Workspace, class_id: int, resume: bool, progress: ProgressFactory | None = None) -> None:
    """Train one class's segmenter and write its ``done.json`` (in this process, or in its own one)."""
    summary = train_class(ws, class_id, resume=resume, progress=progress)
    if ws.ctx.is_main:
        ws.paths.segmenter_done(class_id).write_text(json.dumps(summary))


def _training_samples(ws: Workspace, class_id: int) -> int:
    """Samples a class's segmenter trains on over all its epochs (epochs x samples per epoch): its share of the
    stage's time, to start the longest first."""
    spec = ws.config.segmenter
    images = len(segmenter_image_ids(ws, class_id, ws.tune_split[0]))
    return _class_train(spec, class_id).epochs * images * _repeats(images, spec.train.min_samples) if images else 0


def run(ws: Workspace, resume: bool = False) -> Path:
    """Stage entry point: train every class of ``segmenter.class_ids``; with ``resume`` finished classes
    (``class<id>/done.json``) are skipped and an interrupted one continues from its ``last.pt``.

    Raises:
        RuntimeError: with ``segmenter.parallel_classes > 1``, classes whose process failed (each named; the
            other classes' segmenters are kept).

    Returns:
        The ``segmenter`` folder.
    """
    pending = []
    for class_id in ws.segmenter_class_ids:
        if resume and ws.paths.segmenter_done(class_id).is_file():
            logger.info("segmenter %d already trained; skipping", class_id)
        else:
            pending.append(class_id)
    workers = parallel_workers(ws, _CLASSES, ws.config.segmenter.parallel_classes, len(pending))
    if workers > 1:
        _start_weights(ws)  # a missing input fails here, once, rather than in every process
        longest_first = sorted(pending, key=lambda c: _training_samples(ws, c), reverse=True)
        train_in_processes(ws, _CLASSES, _train_class_job, longest_first, workers, resume)
        return ws.paths.segmenter_dir
    ws.store.preload(ws.image_ids, show_progress=ws.ctx.is_main)
    for class_id in pending:
        _train_class_job(ws, class_id, resume)
    return ws.paths.segmenter_dir
