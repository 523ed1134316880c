"""Validation-time inference during training, sharded over DDP ranks and gathered on all of them:
classifier probabilities and segmenter Dice at the network scale.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from training.distributed import DistContext, all_gather_objects

__all__ = ["classifier_metrics", "predict_probabilities", "segmenter_dice"]


def _shard(dataset: Dataset, ctx: DistContext) -> tuple[list[int], Subset]:
    indices = list(range(ctx.rank, len(dataset), ctx.world_size))  # type: ignore[arg-type]
    return indices, Subset(dataset, indices)


@torch.no_grad()
def predict_probabilities(model: nn.Module, dataset: Dataset, ctx: DistContext, batch_size: int) -> np.ndarray:
    """Sigmoid outputs of a multi-label classifier on every item of ``dataset``.

    Returns:
        ``(len(dataset), C)`` float64, in dataset order (identical on every rank).
    """
    model.eval()
    indices, shard = _shard(dataset, ctx)
    outputs = [
        torch.sigmoid(model(images.to(ctx.device)).float()).cpu().numpy()
        for images, _ in DataLoader(shard, batch_size=batch_size, shuffle=False)
    ]
    local = np.concatenate(outputs) if outputs else np.zeros((0, 0))
    parts = all_gather_objects((indices, local))
    width = max(p.shape[1] for _, p in parts if p.size) if any(p.size for _, p in parts) else 0
    out = np.zeros((len(dataset), width), dtype=np.float64)  # type: ignore[arg-type]
    for idx, probs in parts:
        if len(idx):
            out[idx] = probs
    return out


def classifier_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Validation metrics of the classifier.

    Args:
        probabilities: ``(N, 4)`` predicted probabilities.
        labels: ``(N, 4)`` bool truth.

    Returns:
        ``bce`` (mean binary cross-entropy), ``neg_bce`` (the monitored score), ``auc`` (mean ROC AUC over
        classes with both labels present; ``nan`` when none) and ``f1`` (macro F1 at 0.5).
    """
    from sklearn.metrics import f1_score, roc_auc_score

    p = np.clip(probabilities, 1e-7, 1 - 1e-7)
    y = labels.astype(np.float64)
    bce = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    aucs = [roc_auc_score(y[:, k], p[:, k]) for k in range(y.shape[1]) if 0 < y[:, k].sum() < len(y)]
    f1 = f1_score(labels, probabilities >= 0.5, average="macro", zero_division=1.0)
    return {"bce": bce, "neg_bce": -bce, "auc": float(np.mean(aucs)) if aucs else float("nan"), "f1": float(f1)}


@torch.no_grad()
def segmenter_dice(
    model: nn.Module, dataset: Dataset, ctx: DistContext, batch_size: int, threshold: float = 0.5
) -> dict[str, float]:
    """Mean per-image Dice of a binary segmenter at the network scale (empty vs empty = 1).

    Args:
        model: maps ``(N, 3, h, w)`` to logits ``(N, 1, h, w)``.
        dataset: yields ``(image, coverage target)``; targets are binarised at 0.5.
        ctx: distributed context (the dataset is sharded over ranks).
        batch_size: images per forward pass.
        threshold: pixel probability threshold.

    Returns:
        ``dice`` (all images), ``dice_pos`` (images with the class; ``nan`` when none).
    """
    model.eval()
    _, shard = _shard(dataset, ctx)
    scores: list[tuple[float, bool]] = []
    for images, targets in DataLoader(shard, batch_size=batch_size, shuffle=False):
        pred = torch.sigmoid(model(images.to(ctx.device)).float()) >= threshold
        truth = targets.to(ctx.device) >= 0.5
        inter = (pred & truth).flatten(1).sum(1).double()
        total = (pred.flatten(1).sum(1) + truth.flatten(1).sum(1)).double()
        dice = torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))
        scores += list(zip(dice.cpu().tolist(), (truth.flatten(1).sum(1) > 0).cpu().tolist(), strict=True))
    gathered = [s for part in all_gather_objects(scores) for s in part]
    values = np.array([d for d, _ in gathered], dtype=np.float64)
    positive = np.array([p for _, p in gathered], dtype=bool)
    return {
        "dice": float(values.mean()) if len(values) else float("nan"),
        "dice_pos": float(values[positive].mean()) if positive.any() else float("nan"),
    }
