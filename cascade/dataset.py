"""A torch ``Dataset`` over a Severstal-style folder, and an image-level stratified K-fold split.

``SeverstalDataset`` reads ``images_dir/<image_id>`` and the masks of ``annotations``; images without
annotation rows are clean (all-empty masks), as in Kaggle's ``ImageId,ClassId,EncodedPixels`` train.csv.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cascade.constants import CLASS_IDS
from cascade.formats import Annotations, list_image_ids
from cascade.imageio import read_image

__all__ = ["SeverstalDataset", "combination_labels", "read_image", "stratified_kfold"]

Transform = Callable[..., Mapping[str, Any]]
"""An albumentations-style transform: ``transform(image=(H, W, 3), mask=(H, W, C)) -> {"image", "mask"}``."""


class SeverstalDataset(Dataset):
    """Images and per-class masks of a Severstal-style folder.

    Each item is a dict:

    - ``image``: without a transform, ``(H, W, 3)`` uint8 numpy RGB; with a transform, whatever it
      returns — a ``(3, H, W)`` torch tensor when it ends in ``ToTensorV2`` (uint8, or float32 after
      ``Normalize``), else an ``(H', W', 3)`` numpy array.
    - ``mask``: ``(C, H, W)`` with ``C = len(class_ids)`` (4 by default), row ``k`` = ``class_ids[k]``;
      uint8 0/1 numpy when ``image`` is numpy, float32 0/1 torch tensor when ``image`` is a tensor.
    - ``labels``: ``(C,)`` float32 numpy or tensor (like ``mask``), 1 where the (transformed) mask is non-empty.
    - ``image_id``: the file name.

    Args:
        images_dir: folder with the image files.
        annotations: ground truth; ``None`` gives all-empty masks (unlabelled images).
        image_ids: file names to use, in order; default every image file in ``images_dir``, sorted
            (``cascade.formats.list_image_ids``).
        transform: albumentations-style transform, called as ``transform(image=img, mask=mask_hwc)`` with
            ``mask_hwc`` ``(H, W, C)`` uint8 (albumentations 2.x convention).
        class_ids: classes whose masks to return (default all four), e.g. ``(3,)`` for one segmenter.
    """

    def __init__(
        self,
        images_dir: str | Path,
        annotations: Annotations | None = None,
        image_ids: Sequence[str] | None = None,
        transform: Transform | None = None,
        class_ids: Sequence[int] | None = None,
    ) -> None:
        self.images_dir = Path(images_dir)
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"images directory {self.images_dir} does not exist")
        if image_ids is None:
            image_ids = list_image_ids(self.images_dir)
        self.image_ids: tuple[str, ...] = tuple(image_ids)
        self.annotations = annotations
        self.transform = transform
        known = tuple(CLASS_IDS if annotations is None else annotations.class_ids)
        self.class_ids: tuple[int, ...] = tuple(known if class_ids is None else class_ids)
        bad = [c for c in self.class_ids if c not in known]
        if bad or not self.class_ids or len(set(self.class_ids)) != len(self.class_ids):
            raise ValueError(f"class_ids {class_ids!r} must be distinct values from {list(known)}")
        self._rows = [known.index(c) for c in self.class_ids]

    def __len__(self) -> int:
        return len(self.image_ids)

    def masks(self, image_id: str, shape: tuple[int, int]) -> np.ndarray:
        """Ground truth of one image: ``(C, H, W)`` uint8 0/1 for ``class_ids`` (zeros when unannotated)."""
        if self.annotations is None or image_id not in self.annotations.rles:
            return np.zeros((len(self.class_ids), *shape), dtype=np.uint8)
        full = np.asarray(self.annotations.masks(image_id, shape))
        return full[self._rows].astype(np.uint8)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.image_ids[index]
        image = read_image(self.images_dir / image_id)
        if not image.flags.writeable:  # arrays viewed from PIL are read-only; transforms and torch want to own them
            image = image.copy()
        mask = self.masks(image_id, image.shape[:2])
        if self.transform is None:
            return {"image": image, "mask": mask, "labels": _labels(mask), "image_id": image_id}
        out = self.transform(image=image, mask=np.ascontiguousarray(mask.transpose(1, 2, 0)))
        image, mask_out = out["image"], out["mask"]
        if isinstance(image, torch.Tensor):
            mask_t = torch.as_tensor(np.asarray(mask_out)) if not isinstance(mask_out, torch.Tensor) else mask_out
            if mask_t.ndim == 2:
                mask_t = mask_t.unsqueeze(0)
            elif tuple(mask_t.shape[:2]) == tuple(image.shape[-2:]) and mask_t.shape[-1] == len(self.class_ids):
                mask_t = mask_t.permute(2, 0, 1)  # (H, W, C) -> (C, H, W); ToTensorV2 keeps masks HWC
            mask_t = mask_t.contiguous().float()
            return {"image": image, "mask": mask_t, "labels": _labels(mask_t), "image_id": image_id}
        mask_np = np.asarray(mask_out)
        mask_np = mask_np[None] if mask_np.ndim == 2 else mask_np.transpose(2, 0, 1)
        mask_np = np.ascontiguousarray(mask_np, dtype=np.uint8)
        return {"image": image, "mask": mask_np, "labels": _labels(mask_np), "image_id": image_id}


def _labels(mask: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    if isinstance(mask, torch.Tensor):
        return (mask.flatten(1) > 0).any(dim=1).float()
    return (mask.reshape(mask.shape[0], -1) > 0).any(axis=1).astype(np.float32)


def combination_labels(annotations: Annotations, image_ids: Sequence[str] | None = None) -> list[str]:
    """Per image, the present class ids as a string (``""`` = clean, ``"34"`` = classes 3 and 4).

    Args:
        annotations: ground truth.
        image_ids: images to label (default ``annotations.image_ids``); ids without rows are clean.
    """
    ids = annotations.image_ids if image_ids is None else image_ids
    labels = []
    for image_id in ids:
        rles = annotations.rles.get(image_id, ("",) * annotations.num_classes)
        labels.append("".join(str(c) for c, rle in zip(annotations.class_ids, rles, strict=True) if rle.strip()))
    return labels


def _merge_rare(labels: list[str], n_splits: int) -> list[str]:
    counts = Counter(labels)
    merged = {}
    for combo, count in counts.items():
        if count >= n_splits:
            merged[combo] = combo
            continue
        subsets = ["".join(sub) for size in range(len(combo) - 1, 0, -1) for sub in combinations(combo, size)]
        frequent = [s for s in subsets if counts.get(s, 0) >= n_splits]
        merged[combo] = max(frequent, key=lambda s: (len(s), counts[s], s)) if frequent else "rare"
    out = [merged[label] for label in labels]
    rare = out.count("rare")
    if 0 < rare < n_splits:
        largest = max((c for c in Counter(out) if c != "rare"), key=lambda c: (Counter(out)[c], c), default=None)
        out = [largest if label == "rare" and largest is not None else label for label in out]
    return out


def stratified_kfold(
    annotations: Annotations, n_splits: int, seed: int = 0, image_ids: Sequence[str] | None = None
) -> list[tuple[list[str], list[str]]]:
    """Image-level K-fold split stratified by class combination; deterministic for a seed.

    Combinations with fewer than ``n_splits`` images are merged into their most specific frequent
    sub-combination (``"123"`` into ``"12"`` or ``"1"``), else into one ``rare`` stratum, so that every
    stratum can be spread over all folds.

    Args:
        annotations: ground truth.
        n_splits: number of folds (>= 2).
        seed: shuffling seed.
        image_ids: images to split (default ``annotations.image_ids``); pass every image of the folder so
            clean images without annotation rows are included.

    Returns:
        ``n_splits`` pairs ``(train_ids, val_ids)``; the validation sets are disjoint and cover all images.
    """
    from sklearn.model_selection import StratifiedKFold

    ids = list(annotations.image_ids if image_ids is None else image_ids)
    if n_splits < 2:
        raise ValueError(f"n_splits must be >= 2, got {n_splits}")
    if len(ids) < n_splits:
        raise ValueError(f"cannot split {len(ids)} images into {n_splits} folds; need at least {n_splits} images")
    if len(set(ids)) != len(ids):
        raise ValueError("image_ids contain duplicates")
    strata = _merge_rare(combination_labels(annotations, ids), n_splits)
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    folds = []
    for train_idx, val_idx in splitter.split(np.zeros(len(ids)), strata):
        folds.append(([ids[i] for i in train_idx], [ids[i] for i in val_idx]))
    return folds
