"""Training data: augmentations built from the YAML list, and the two datasets — whole images with 4 labels for
the classifier, (cropped) images with one class's mask for a segmenter. Both read images through
``training.image_store.ImageStore`` (decode, resize by ``input.scale``, cache; re-exported here).

Augmentation is deterministic: each sample's random state is seeded from ``(seed, epoch, index)``, so a run
resumed at epoch ``e`` sees exactly the samples a straight run would, whatever the number of workers.
Images are normalised with ``cascade.preprocess.normalize`` and resized like ``cascade.preprocess`` does
(``cv2.INTER_AREA``), so training sees what inference sees.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from cascade.manifest import Normalization
from cascade.preprocess import normalize, padded_size
from training.augment_copy_paste import COPY_PASTE, CopyPaste, DonorPool
from training.config import AugmentSpec, CropConfig
from training.distributed import DistContext
from training.image_store import ImageStore, scaled_size

__all__ = [
    "AUGMENTATIONS",
    "ClassifierDataset",
    "ImageStore",
    "SegmenterDataset",
    "build_augmentations",
    "make_train_loader",
    "scaled_size",
]

logger = logging.getLogger(__name__)

AUGMENTATIONS: dict[str, Callable[..., A.BasicTransform]] = {
    "hflip": A.HorizontalFlip,
    "vflip": A.VerticalFlip,
    "brightness_contrast": A.RandomBrightnessContrast,
    "gamma": A.RandomGamma,
    "gauss_noise": A.GaussNoise,
    "blur": A.GaussianBlur,
    "affine": A.Affine,
    "illumination": A.Illumination,
    "jpeg": A.ImageCompression,
    "tone_curve": A.RandomToneCurve,
    "sharpen": A.Sharpen,
}
"""Augmentation names usable in the YAML ``augment`` list (albumentations 2.x classes); ``copy_paste``
(``training.augment_copy_paste.CopyPaste``) is one more, built with the trainer's donor pool."""


def build_augmentations(
    specs: Sequence[AugmentSpec],
    crop: CropConfig | None = None,
    *,
    pool: DonorPool | None = None,
    mask_class: int | None = None,
) -> A.Compose:
    """An albumentations pipeline: copy-paste (when listed), an optional random crop, the other augmentations.

    Args:
        specs: augmentations by name (see ``AUGMENTATIONS``, and ``copy_paste``), probability and parameters.
        crop: random crop (network pixels); with probability ``non_empty_p`` the crop is placed on mask pixels.
        pool: donors of ``copy_paste`` (the training images).
        mask_class: the masks are ``(h, w)`` of this class (a segmenter's); None: ``(h, w, C)`` of all classes.

    Raises:
        ValueError: unknown augmentation name or bad parameters, ``copy_paste`` without a pool.
    """
    transforms: list[A.BasicTransform] = []
    for spec in specs:
        if spec.name == COPY_PASTE:
            transforms.append(_copy_paste(spec, pool, mask_class))
    if crop is not None and crop.height > 0 and crop.width > 0:
        h, w = crop.height, crop.width
        transforms.append(
            A.OneOf(
                [
                    A.CropNonEmptyMaskIfExists(height=h, width=w, p=crop.non_empty_p),
                    A.RandomCrop(height=h, width=w, pad_if_needed=True, p=1.0 - crop.non_empty_p),
                ],
                p=1.0,
            )
        )
    for spec in specs:
        if spec.name == COPY_PASTE:
            continue
        if spec.name not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {spec.name!r}; allowed: {sorted([*AUGMENTATIONS, COPY_PASTE])}")
        accepted = [n for n in inspect.signature(AUGMENTATIONS[spec.name]).parameters if n not in ("self", "p")]
        unknown = sorted(set(spec.params) - set(accepted))
        if unknown:
            raise ValueError(f"bad parameters {unknown} for augmentation {spec.name!r}; allowed: {accepted}")
        try:
            transforms.append(AUGMENTATIONS[spec.name](p=spec.p, **spec.params))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad parameters {spec.params} for augmentation {spec.name!r}: {exc}") from exc
    return A.Compose(transforms)


def _copy_paste(spec: AugmentSpec, pool: DonorPool | None, mask_class: int | None) -> CopyPaste:
    if pool is None:
        raise ValueError(f"augmentation {COPY_PASTE!r} needs a donor pool of training images (pool=)")
    accepted = [n for n in inspect.signature(CopyPaste).parameters if n not in ("self", "p", "pool", "mask_class")]
    unknown = sorted(set(spec.params) - set(accepted))
    if unknown:
        raise ValueError(f"bad parameters {unknown} for augmentation {COPY_PASTE!r}; allowed: {accepted}")
    return CopyPaste(pool, p=spec.p, mask_class=mask_class, **spec.params)


class _AugmentedDataset(Dataset):
    """Shared parts: per-sample seeding of the augmentation, normalisation and padding to the stride."""

    def __init__(
        self,
        store: ImageStore,
        image_ids: Sequence[str],
        normalization: Normalization,
        transform: A.Compose | None,
        seed: int,
        stride: int,
    ) -> None:
        self.store = store
        self.image_ids = list(image_ids)
        self.normalization = normalization
        self.transform = transform
        self.seed = seed
        self.stride = stride
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.image_ids)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (called by the training loop)."""
        self.epoch = epoch

    def _augment(self, index: int, image: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        if self.transform is None:
            return image, mask
        self.transform.set_random_seed((self.seed * 1_000_003 + self.epoch * 100_003 + index) % 2**32)
        if mask is None:
            return self.transform(image=image)["image"], None
        # image_id: copy_paste reads the image's other classes (the other transforms pass it through)
        out: dict[str, Any] = self.transform(image=image, mask=mask, image_id=self.image_ids[index])
        return out["image"], out["mask"]

    def _tensor(self, image: np.ndarray) -> torch.Tensor:
        chw = normalize(np.ascontiguousarray(image), self.normalization)
        hp, wp = padded_size(chw.shape[1], self.stride), padded_size(chw.shape[2], self.stride)
        if (hp, wp) != chw.shape[1:]:
            chw = np.pad(chw, ((0, 0), (0, hp - chw.shape[1]), (0, wp - chw.shape[2])))
        return torch.from_numpy(chw)


class ClassifierDataset(_AugmentedDataset):
    """Whole images with their four presence labels (and, for deep supervision, their four masks).

    Items are ``(image (3, h, w) float32, labels (4,) float32)``, or with ``masks`` and ``mask_output``
    ``(image, (labels, masks (4, h, w) float32 coverage))``. With ``masks`` the augmentation sees the masks,
    and a class the augmented masks hold (a defect pasted by ``copy_paste``) is labelled present.

    Args:
        store: image source.
        image_ids: images of this split.
        labels: ``(N, 4)`` bool presence labels in ``image_ids`` order.
        normalization: input normalisation.
        transform: augmentation (``None`` for validation).
        seed: augmentation seed.
        stride: pad sides to a multiple of this.
        masks: callable giving an image's full-size ``(4, H, W)`` bool masks.
        mask_output: return the masks as well (deep supervision); needs ``masks``.
    """

    def __init__(
        self,
        store: ImageStore,
        image_ids: Sequence[str],
        labels: np.ndarray,
        normalization: Normalization,
        transform: A.Compose | None = None,
        seed: int = 0,
        stride: int = 32,
        masks: Callable[[str], np.ndarray] | None = None,
        mask_output: bool = True,
    ) -> None:
        super().__init__(store, image_ids, normalization, transform, seed, stride)
        if labels.ndim != 2 or labels.shape[0] != len(self.image_ids) or labels.shape[1] < 1:
            raise ValueError(f"labels must have shape ({len(self.image_ids)}, C), got {labels.shape}")
        self.labels = labels.astype(np.float32)
        self.masks = masks
        self.mask_output = mask_output and masks is not None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        image_id = self.image_ids[index]
        image = self.store.image(image_id)
        labels = torch.from_numpy(self.labels[index])
        if self.masks is None:
            image, _ = self._augment(index, image, None)
            return self._tensor(image), labels
        masks = self.masks
        coverage = self.store.coverage((image_id, "all"), lambda: masks(image_id))
        image, coverage = self._augment(index, image, coverage)
        labels = torch.maximum(labels, torch.from_numpy((coverage.max(axis=(0, 1)) > 0).astype(np.float32)))
        tensor = self._tensor(image)
        if not self.mask_output:
            return tensor, labels
        target = np.zeros((self.labels.shape[1], *tensor.shape[1:]), dtype=np.float32)
        target[:, : coverage.shape[0], : coverage.shape[1]] = coverage.transpose(2, 0, 1)
        return tensor, (labels, torch.from_numpy(target))


class SegmenterDataset(_AugmentedDataset):
    """Images with one class's mask, for that class's binary segmenter.

    Items are ``(image (3, h, w) float32, mask (1, h, w) float32 coverage)``; with a crop in ``transform``
    ``(h, w)`` is the crop size.

    Args:
        store: image source.
        image_ids: images of this split (positives and negatives of the class).
        masks: callable giving an image's full-size ``(H, W)`` bool mask of the class.
        normalization: input normalisation.
        transform: augmentation with crop (``None`` for full-image validation).
        seed: augmentation seed.
        stride: pad sides to a multiple of this.
    """

    def __init__(
        self,
        store: ImageStore,
        image_ids: Sequence[str],
        masks: Callable[[str], np.ndarray],
        normalization: Normalization,
        transform: A.Compose | None = None,
        seed: int = 0,
        stride: int = 32,
    ) -> None:
        super().__init__(store, image_ids, normalization, transform, seed, stride)
        self.masks = masks

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_id = self.image_ids[index]
        image = self.store.image(image_id)
        masks = self.masks
        mask = self.store.coverage((image_id, masks), lambda: masks(image_id))
        image, mask = self._augment(index, image, mask)
        tensor = self._tensor(image)
        target = np.zeros(tensor.shape[1:], dtype=np.float32)
        target[: mask.shape[0], : mask.shape[1]] = mask
        return tensor, torch.from_numpy(target[None])


def make_train_loader(
    dataset: Dataset, ctx: DistContext, batch_size: int, num_workers: int = 0, seed: int = 0
) -> DataLoader:
    """Shuffling loader over this rank's shard (a ``DistributedSampler`` also in single-process runs, so the
    order is a function of ``(seed, epoch)`` and a resumed run sees the same batches as a straight one).

    The last incomplete batch is dropped when the shard holds more than one batch (BatchNorm needs > 1 sample).
    """
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=len(sampler) > batch_size,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=num_workers > 0,
    )
