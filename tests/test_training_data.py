"""Tests of training.data: augmentation factory, image store scaling, datasets and their seeding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cascade.formats import Annotations
from cascade.manifest import InputPolicy, Normalization
from training.config import AugmentSpec, CropConfig
from training.data import (
    ClassifierDataset,
    ImageStore,
    SegmenterDataset,
    build_augmentations,
    make_train_loader,
    scaled_size,
)
from training.distributed import DistContext


def test_unknown_augmentation_lists_the_allowed() -> None:
    with pytest.raises(ValueError, match=r"unknown augmentation 'rotate'.*'hflip'"):
        build_augmentations([AugmentSpec(name="rotate")])
    with pytest.raises(ValueError, match="bad parameters"):
        build_augmentations([AugmentSpec(name="hflip", params={"angle": 3})])


def test_scaled_size_matches_the_predictor() -> None:
    assert scaled_size(256, 1600, 0.25) == (64, 400)
    assert scaled_size(256, 1600, 1.0) == (256, 1600)
    assert scaled_size(255, 1599, 0.5) == (128, 800)
    assert scaled_size(256, 1600, 0.125, 0.5) == InputPolicy(scale=0.125, scale_x=0.5).net_size(256, 1600) == (32, 800)


def test_image_store_resizes_columns_by_scale_x(synth_dir: Path, synth_annotations: Annotations) -> None:
    store = ImageStore(synth_dir / "train_images", scale=0.125, scale_x=0.5)
    image_id = synth_annotations.image_ids[0]
    h, w = store.full_shape(image_id)
    expected = InputPolicy(scale=0.125, scale_x=0.5).net_size(h, w)
    assert store.image(image_id).shape[:2] == expected
    assert store.mask(np.ones((h, w), bool)).shape == expected


def _first_positive(annotations: Annotations, k: int) -> str:
    labels = annotations.labels()
    return annotations.image_ids[int(np.flatnonzero(labels[:, k])[0])]


def test_segmenter_dataset_crops_and_is_seeded(synth_dir: Path, synth_annotations: Annotations) -> None:
    store = ImageStore(synth_dir / "train_images", scale=0.25)
    image_id = _first_positive(synth_annotations, 2)
    masks = lambda i: synth_annotations.masks(i, store.full_shape(i))[2]  # noqa: E731
    transform = build_augmentations(
        [AugmentSpec("hflip"), AugmentSpec("brightness_contrast")], CropConfig(64, 128, 1.0)
    )
    dataset = SegmenterDataset(store, [image_id] * 3, masks, Normalization(), transform, seed=5)
    image, target = dataset[0]
    assert image.shape == (3, 64, 128) and target.shape == (1, 64, 128)
    assert target.sum() > 0  # non_empty_p=1 places the crop on the defect
    again, _ = dataset[0]
    torch.testing.assert_close(image, again)  # same (seed, epoch, index) -> same sample
    other, _ = dataset[1]
    dataset.set_epoch(1)
    later, _ = dataset[0]
    assert not torch.equal(image, other) or not torch.equal(image, later)


def test_full_image_datasets_pad_to_the_stride(synth_dir: Path, synth_annotations: Annotations) -> None:
    store = ImageStore(synth_dir / "train_images", scale=0.25)
    ids = list(synth_annotations.image_ids[:2])
    dataset = ClassifierDataset(store, ids, synth_annotations.labels()[:2], Normalization(), stride=32)
    image, labels = dataset[0]
    assert image.shape == (3, 64, 416) and labels.shape == (4,)
    assert torch.all(image[:, :, 400:] == 0)
    with pytest.raises(ValueError, match="labels must have shape"):
        ClassifierDataset(store, ids, np.zeros((3, 4), bool), Normalization())


def test_store_masks_become_coverage_at_scale(tmp_path: Path, synth_dir: Path) -> None:
    store = ImageStore(synth_dir / "train_images", scale=0.5)
    mask = np.zeros((256, 1600), dtype=bool)
    mask[10:12, 100:103] = True
    coverage = store.mask(mask)
    assert coverage.shape == (128, 800)
    assert coverage.sum() == pytest.approx(mask.sum() / 4)


def test_train_loader_order_depends_on_seed_and_epoch_only() -> None:
    dataset = torch.utils.data.TensorDataset(torch.arange(20).float())

    def order(epoch: int, seed: int) -> list[float]:
        loader = make_train_loader(dataset, DistContext(), batch_size=4, seed=seed)
        loader.sampler.set_epoch(epoch)
        return [float(v) for (batch,) in loader for v in batch]

    assert order(0, 1) == order(0, 1)
    assert order(0, 1) != order(1, 1)
    assert sorted(order(2, 1)) == list(range(20))
