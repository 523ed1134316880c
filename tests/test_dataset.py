"""Tests for cascade.dataset: item shapes and types with and without transforms, and the stratified K-fold."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from albumentations.pytorch import ToTensorV2

from cascade.constants import IMAGE_SHAPE
from cascade.dataset import SeverstalDataset, combination_labels, stratified_kfold
from cascade.formats import Annotations
from tests.fixtures.data import SYNTH_N


def _first_positive(annotations: Annotations, class_index: int | None = None) -> int:
    labels = annotations.labels()
    hits = labels.any(axis=1) if class_index is None else labels[:, class_index]
    return int(np.flatnonzero(hits)[0])


def test_items_without_transform(synth_dir: Path, synth_annotations: Annotations) -> None:
    ds = SeverstalDataset(synth_dir / "train_images", synth_annotations)
    assert len(ds) == SYNTH_N
    assert ds.image_ids == tuple(sorted(synth_annotations.image_ids))
    index = ds.image_ids.index(synth_annotations.image_ids[_first_positive(synth_annotations)])
    item = ds[index]
    assert set(item) == {"image", "mask", "labels", "image_id"}
    assert item["image"].shape == (*IMAGE_SHAPE, 3) and item["image"].dtype == np.uint8
    assert item["mask"].shape == (4, *IMAGE_SHAPE) and item["mask"].dtype == np.uint8
    assert set(np.unique(item["mask"])) <= {0, 1}
    np.testing.assert_array_equal(item["mask"], synth_annotations.masks(item["image_id"], IMAGE_SHAPE))
    np.testing.assert_array_equal(item["labels"], item["mask"].any(axis=(1, 2)).astype(np.float32))
    assert item["labels"].sum() >= 1


def test_albumentations_transform_ending_in_totensor(synth_dir: Path, synth_annotations: Annotations) -> None:
    transform = A.Compose([A.HorizontalFlip(p=1.0), A.Normalize(), ToTensorV2()])
    plain = SeverstalDataset(synth_dir / "train_images", synth_annotations)
    ds = SeverstalDataset(synth_dir / "train_images", synth_annotations, transform=transform)
    index = _first_positive(synth_annotations)
    ds_index = ds.image_ids.index(synth_annotations.image_ids[index])
    item, ref = ds[ds_index], plain[ds_index]
    assert isinstance(item["image"], torch.Tensor) and item["image"].shape == (3, *IMAGE_SHAPE)
    assert item["image"].dtype == torch.float32
    assert isinstance(item["mask"], torch.Tensor) and item["mask"].shape == (4, *IMAGE_SHAPE)
    assert item["mask"].dtype == torch.float32
    np.testing.assert_array_equal(item["mask"].numpy(), ref["mask"][:, :, ::-1])
    assert torch.equal(item["labels"], torch.from_numpy(ref["labels"]))


def test_transform_with_transposed_mask_and_one_class(synth_dir: Path, synth_annotations: Annotations) -> None:
    index = _first_positive(synth_annotations, 2)
    image_id = synth_annotations.image_ids[index]
    ds = SeverstalDataset(
        synth_dir / "train_images",
        synth_annotations,
        image_ids=[image_id],
        transform=A.Compose([ToTensorV2(transpose_mask=True)]),
        class_ids=(3,),
    )
    item = ds[0]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, *IMAGE_SHAPE)
    assert item["mask"].shape == (1, *IMAGE_SHAPE)
    np.testing.assert_array_equal(item["mask"][0].numpy(), synth_annotations.masks(image_id, IMAGE_SHAPE)[2])
    assert item["labels"].tolist() == [1.0]


def test_numpy_transform_crops_image_and_mask(synth_dir: Path, synth_annotations: Annotations) -> None:
    transform = A.Compose([A.Crop(x_min=100, y_min=0, x_max=612, y_max=256)])
    ds = SeverstalDataset(synth_dir / "train_images", synth_annotations, transform=transform, class_ids=(4, 1))
    plain = SeverstalDataset(synth_dir / "train_images", synth_annotations)
    item, ref = ds[0], plain[0]
    assert item["image"].shape == (256, 512, 3) and item["image"].dtype == np.uint8
    assert item["mask"].shape == (2, 256, 512) and item["mask"].dtype == np.uint8
    np.testing.assert_array_equal(item["mask"], ref["mask"][[3, 0], :, 100:612])


def test_unannotated_images_and_bad_arguments(synth_dir: Path) -> None:
    ds = SeverstalDataset(synth_dir / "train_images")
    item = ds[0]
    assert item["mask"].shape == (4, *IMAGE_SHAPE) and not item["mask"].any()
    with pytest.raises(ValueError, match="class_ids"):
        SeverstalDataset(synth_dir / "train_images", class_ids=(0, 5))
    with pytest.raises(FileNotFoundError):
        SeverstalDataset(synth_dir / "missing")


def _annotations(counts: dict[str, int]) -> Annotations:
    ids, rles = [], {}
    for combo, count in counts.items():
        for j in range(count):
            image_id = f"{combo or 'clean'}_{j:03d}.jpg"
            ids.append(image_id)
            rles[image_id] = tuple("1 5" if str(c) in combo else "" for c in (1, 2, 3, 4))
    return Annotations(tuple(ids), rles)


COUNTS = {"": 40, "3": 30, "1": 10, "4": 8, "34": 6, "2": 3, "13": 2, "123": 1}


def test_stratified_kfold_is_a_partition_with_every_frequent_combination_in_each_fold() -> None:
    annotations = _annotations(COUNTS)
    folds = stratified_kfold(annotations, n_splits=5, seed=0)
    assert len(folds) == 5
    all_ids = set(annotations.image_ids)
    vals = [set(val) for _, val in folds]
    assert set().union(*vals) == all_ids
    assert sum(len(v) for v in vals) == len(all_ids)
    labels = dict(zip(annotations.image_ids, combination_labels(annotations), strict=True))
    frequent = {combo for combo, n in COUNTS.items() if n >= 5}
    for train, val in folds:
        assert set(train) | set(val) == all_ids and not set(train) & set(val)
        assert frequent <= {labels[i] for i in val}
        counts = Counter(labels[i] for i in val)
        assert all(abs(counts[c] - COUNTS[c] / 5) <= 1 for c in frequent)
    assert stratified_kfold(annotations, 5, seed=0) == folds
    assert stratified_kfold(annotations, 5, seed=1) != folds


def test_stratified_kfold_includes_listed_clean_images_and_rejects_bad_input() -> None:
    annotations = _annotations({"3": 6, "1": 6})
    extra = [f"extra_{i}.jpg" for i in range(6)]
    ids = [*annotations.image_ids, *extra]
    folds = stratified_kfold(annotations, 3, seed=0, image_ids=ids)
    for _, val in folds:
        assert sum(i in extra for i in val) == 2
    with pytest.raises(ValueError, match="n_splits"):
        stratified_kfold(annotations, 1)
    with pytest.raises(ValueError, match="at least"):
        stratified_kfold(_annotations({"1": 2}), 3)
    with pytest.raises(ValueError, match="duplicates"):
        stratified_kfold(annotations, 3, image_ids=[*ids, ids[0]])


def test_stratified_kfold_on_the_synthetic_set(synth_annotations: Annotations) -> None:
    folds = stratified_kfold(synth_annotations, 3, seed=0)
    assert sorted(i for _, val in folds for i in val) == sorted(synth_annotations.image_ids)
