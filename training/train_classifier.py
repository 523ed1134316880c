"""Stage ``classifier``: the multi-label gate, trained over stratified K folds.

Each fold's model trains on the other folds' images (whole images, augmented) with BCE, early-stopped on
the validation BCE, and predicts its validation images: together these are the **out-of-fold
probabilities** (``classifier/oof.csv``) that hard-negative mining and threshold tuning use, since no model
scores an image it trained on.

With ``classifier.aux_mask_weight > 0`` the backbone is also deep-supervised by the masks during training
(``training.deep_supervision``). The plain classifier weights go to ``classifier.pt`` next to the loop's
checkpoints. The shipped classifier (``classifier/final/classifier.pt``) is, by ``classifier.final``:

- ``refit`` (default): one more model trained on *all* images for the median of the folds' best epoch
  counts, without validation. Uses every image, at the cost of one more training run; its probabilities
  are assumed calibrated like the fold models' (the thresholds are tuned on the out-of-fold ones).
- ``fold``: the model of fold ``data.tune_fold`` as it is (cheaper; sees ``(K-1)/K`` of the data).

With ``classifier.parallel_folds > 1`` on CPU (no torchrun), that many folds train at once in spawned
processes sharing the threads (``training.parallel``); each writes its ``fold<k>/done.json`` as a sequential run
does.

Progress: one bar per fold (and one for the refit), over all its epochs; folds training in parallel processes
share one bar, drawn by the parent (``training.parallel``).

Run on its own: ``cascade train --config configs/demo-cpu.yaml --stage classifier [--out RUN_DIR]``;
under ``torchrun`` each fold trains with DDP.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.augment_copy_paste import DonorPool, uses_copy_paste
from training.data import ClassifierDataset, build_augmentations, make_train_loader
from training.deep_supervision import MaskSupervisedClassifier, MaskSupervisedLoss, unwrap_classifier
from training.distributed import barrier
from training.inference import classifier_metrics, predict_probabilities
from training.loop import ProgressFactory, fit
from training.oof import OofTable, write_oof
from training.parallel import JobKind, parallel_workers, train_in_processes
from training.paths import CLASSIFIER_FILE
from training.workspace import Workspace, build_classifier, seed_everything

__all__ = ["run", "train_fold"]

logger = logging.getLogger(__name__)

_FOLDS = JobKind(stage="classifier", noun="fold", plural="folds", setting="classifier.parallel_folds")


def _datasets(ws: Workspace, train_ids: list[str], val_ids: list[str], seed: int) -> tuple[ClassifierDataset, ...]:
    config = ws.config
    paste = uses_copy_paste(config.augment)
    labels = ws.labels_of(train_ids)
    pool = DonorPool.build(ws.store, train_ids, labels, ws.class_ids, ws.all_masks) if paste else None
    transform = build_augmentations(config.augment, pool=pool)
    stride = config.input.stride
    deep = config.classifier.aux_mask_weight > 0
    masks = ws.all_masks if deep or paste else None  # copy_paste needs the masks to label what it pastes
    train = ClassifierDataset(  # targets: soft pseudo-labels are probabilities
        ws.store, train_ids, ws.targets_of(train_ids), ws.normalization, transform, seed=seed, stride=stride,
        masks=masks,
        mask_output=deep,
    )  # fmt: skip
    val = ClassifierDataset(ws.store, val_ids, ws.labels_of(val_ids), ws.normalization, None, stride=stride)
    return train, val


def _model_and_loss(ws: Workspace) -> tuple[nn.Module, nn.Module]:
    """The network to train (with the deep-supervision head when enabled) and its loss."""
    from models import create_loss

    config = ws.config.classifier
    model, loss = build_classifier(ws.config, len(ws.class_ids)), create_loss(config.loss.name, **config.loss.kwargs)
    if config.aux_mask_weight > 0:
        return MaskSupervisedClassifier(model, len(ws.class_ids)), MaskSupervisedLoss(loss, config.aux_mask_weight)
    return model, loss


def _save_classifier(ws: Workspace, model: nn.Module, path: Path) -> None:
    """Write the plain classifier's weights (no auxiliary head), as the bundle stores them."""
    if ws.ctx.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": unwrap_classifier(model).state_dict()}, path)


def train_fold(
    ws: Workspace, fold: int, resume: bool = False, progress: ProgressFactory | None = None
) -> tuple[int, np.ndarray]:
    """Train the model of fold ``fold`` and predict its validation images (``progress``: as ``fit`` takes it).

    Returns:
        ``(best_epoch, probabilities (len(val_ids), 4))``.
    """
    config = ws.config
    train_ids, val_ids = ws.folds[fold]
    fold_dir = ws.paths.classifier_fold_dir(fold)
    seed_everything(config.seed + fold)
    model, loss = _model_and_loss(ws)
    train_ds, val_ds = _datasets(ws, train_ids, val_ids, config.seed + fold)
    train = config.classifier.train
    loader = make_train_loader(train_ds, ws.ctx, train.batch_size, config.data.num_workers, config.seed + fold)
    val_labels = ws.labels_of(val_ids)

    def validate(net: nn.Module) -> dict[str, float]:
        probabilities = predict_probabilities(unwrap_classifier(net), val_ds, ws.ctx, train.batch_size)
        return classifier_metrics(probabilities, val_labels)

    result = fit(
        model, loader, loss, train, fold_dir, ws.ctx, validate=validate, monitor="neg_bce", resume=resume,
        desc=f"classifier fold {fold}", progress=progress,
    )  # fmt: skip
    _save_classifier(ws, model, fold_dir / CLASSIFIER_FILE)
    probabilities = predict_probabilities(unwrap_classifier(model), val_ds, ws.ctx, train.batch_size)
    logger.info(
        "classifier fold %d: best epoch %d, %s", fold, result.best_epoch, classifier_metrics(probabilities, val_labels)
    )
    return result.best_epoch, probabilities


def _write_fold_done(path: Path, best_epoch: int, val_ids: Sequence[str], probabilities: np.ndarray) -> None:
    path.write_text(
        json.dumps({"best_epoch": best_epoch, "image_ids": list(val_ids), "probabilities": probabilities.tolist()})
    )


def _train_fold_job(ws: Workspace, fold: int, resume: bool, progress: ProgressFactory) -> None:
    """A fold's job in its own process (``classifier.parallel_folds``): train the fold, write its done.json."""
    best_epoch, probabilities = train_fold(ws, fold, resume=resume, progress=progress)
    _write_fold_done(ws.paths.classifier_fold_done(fold), best_epoch, ws.folds[fold][1], probabilities)


def _refit(ws: Workspace, epochs: int, resume: bool) -> None:
    """Train the final classifier on all images for ``epochs`` epochs (no validation)."""
    config = ws.config
    train = dataclasses.replace(config.classifier.train, epochs=epochs)
    seed_everything(config.seed + 1000)
    model, loss = _model_and_loss(ws)
    ids = list(ws.train_ids)
    train_ds, _ = _datasets(ws, ids, ids[:1], config.seed + 1000)
    loader = make_train_loader(train_ds, ws.ctx, train.batch_size, config.data.num_workers, config.seed + 1000)
    final = ws.paths.classifier_final_dir
    fit(model, loader, loss, train, final, ws.ctx, resume=resume, desc="classifier refit")
    _save_classifier(ws, model, ws.paths.classifier_weights)


def run(ws: Workspace, resume: bool = False) -> Path:
    """Stage entry point: all folds, ``classifier/oof.csv``, then the final classifier.

    With ``resume``, finished folds (``fold<k>/done.json``) are skipped and an interrupted one continues
    from its ``last.pt``.

    Returns:
        Path of the final classifier weights (``classifier/final/classifier.pt``).
    """
    config = ws.config
    paths = ws.paths
    n = len(ws.image_ids)
    index = {image_id: i for i, image_id in enumerate(ws.image_ids)}
    probabilities = np.full((n, len(ws.class_ids)), np.nan)
    folds = np.full(n, -1, dtype=np.int64)
    best_epochs: list[int] = []
    pending = [k for k in range(len(ws.folds)) if not (resume and paths.classifier_fold_done(k).is_file())]
    workers = parallel_workers(ws, _FOLDS, config.classifier.parallel_folds, len(pending))
    in_processes = set(pending) if workers > 1 else set()
    if in_processes:
        train_in_processes(ws, _FOLDS, _train_fold_job, pending, workers, resume)
    else:
        ws.store.preload(ws.image_ids, show_progress=ws.ctx.is_main)
    for k, (_, val_ids) in enumerate(ws.folds):
        done = paths.classifier_fold_done(k)
        if k in in_processes or (resume and done.is_file()):
            record = json.loads(done.read_text())
            best_epoch, probs = record["best_epoch"], np.asarray(record["probabilities"], dtype=np.float64)
            if k not in in_processes:
                logger.info("classifier fold %d already trained (best epoch %d); skipping", k, best_epoch)
        else:
            best_epoch, probs = train_fold(ws, k, resume=resume)
            if ws.ctx.is_main:
                _write_fold_done(done, best_epoch, val_ids, probs)
        rows = [index[i] for i in val_ids]
        probabilities[rows], folds[rows] = probs, k
        best_epochs.append(best_epoch)
    if ws.ctx.is_main:
        write_oof(paths.oof_csv, OofTable(tuple(ws.image_ids), folds, probabilities, ws.labels, ws.class_ids))
        logger.info("out-of-fold classifier metrics: %s", classifier_metrics(probabilities, ws.labels))
    final = paths.classifier_weights
    if config.classifier.final == "refit":
        epochs = max(1, int(np.median(best_epochs)))
        logger.info(
            "refitting the classifier on all %d images for %d epochs (fold best epochs %s)", n, epochs, best_epochs
        )
        _refit(ws, epochs, resume)
    elif ws.ctx.is_main:
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(paths.classifier_fold_dir(config.data.tune_fold) / CLASSIFIER_FILE, final)
    barrier()
    return final
