"""Tests of training.augment_copy_paste: image/mask alignment and class ids (property tests), co-occurrence,
blending, determinism, and its use by build_augmentations and the classifier dataset.

Scenes: every defect of class index ``k`` is a rectangle of one grey value ``_VALUES[k]`` (>= 180) on steel
whose values stay below it, so "pixel has the value of class k" must coincide with "mask of class k is set"
after any paste, wherever the defect came from.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cascade.manifest import Normalization
from tests.fixtures.training import tiny_config
from training.augment_copy_paste import CopyPaste, DonorPool
from training.config import AugmentSpec, CropConfig
from training.data import ClassifierDataset, build_augmentations
from training.pipeline import run_pipeline

_CLASS_IDS = (1, 3, 4)
_VALUES = (180, 205, 230)
_STEEL_MAX = 150


class _Store:
    """What ``DonorPool`` reads from ``training.data.ImageStore``: images and channels-last coverage."""

    def __init__(self, images: dict[str, np.ndarray]) -> None:
        self.images = images

    def image(self, image_id: str) -> np.ndarray:
        return self.images[image_id]

    def coverage(self, key: Hashable, full_mask: Callable[[], np.ndarray]) -> np.ndarray:
        return full_mask().transpose(1, 2, 0).astype(np.float32)


def _scene(draw: st.DrawFn, h: int, w: int, n_rects: int, classes: int, noisy: bool) -> tuple[np.ndarray, ...]:
    """``(image (h, w, 3) uint8, masks (C, h, w) bool)``: non-overlapping rectangles on steel."""
    if noisy:
        seed = draw(st.integers(0, 2**16))
        grey = np.random.default_rng(seed).integers(0, _STEEL_MAX + 1, size=(h, w))
    else:
        grey = np.full((h, w), draw(st.integers(60, 100)))
    masks = np.zeros((classes, h, w), dtype=bool)
    for _ in range(n_rects):
        k = draw(st.integers(0, classes - 1))
        y, x = draw(st.integers(0, h - 2)), draw(st.integers(0, w - 2))
        rh, rw = draw(st.integers(1, max(1, h // 3))), draw(st.integers(1, max(1, w // 3)))
        rect = np.zeros((h, w), dtype=bool)
        rect[y : y + rh, x : x + rw] = True
        rect &= ~masks.any(axis=0)
        masks[k] |= rect
        grey[rect] = _VALUES[k]
    return np.repeat(grey[..., None], 3, axis=2).astype(np.uint8), masks


@st.composite
def _pool_and_target(draw: st.DrawFn, noisy: bool = True) -> tuple[DonorPool, str, np.ndarray, np.ndarray]:
    h, w = draw(st.integers(16, 48)), draw(st.integers(16, 64))
    classes = len(_CLASS_IDS)
    images, masks = {}, {}
    for d in range(draw(st.integers(1, 3))):
        size = (draw(st.integers(8, 48)), draw(st.integers(8, 64)))
        images[f"d{d}"], masks[f"d{d}"] = _scene(draw, *size, draw(st.integers(1, 3)), classes, noisy)
    images["t"], masks["t"] = _scene(draw, h, w, draw(st.integers(0, 2)), classes, noisy)
    ids = list(images)
    labels = np.array([masks[i].reshape(classes, -1).any(axis=1) for i in ids])
    pool = DonorPool.build(_Store(images), ids, labels, _CLASS_IDS, masks.__getitem__)
    return pool, "t", images["t"], masks["t"].transpose(1, 2, 0).astype(np.float32)


def _rates(draw: st.DrawFn) -> dict[int, float]:
    return {c: draw(st.sampled_from([0.0, 1.0])) for c in _CLASS_IDS}


_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(scene=_pool_and_target(), data=st.data())
def test_pasted_masks_stay_aligned_and_keep_class_ids(scene: tuple, data: st.DataObject) -> None:
    pool, target_id, image, mask = scene
    rates = None if data.draw(st.booleans()) else _rates(data.draw)
    transform = A.Compose(
        [
            CopyPaste(
                pool,
                class_rates=rates,
                context=data.draw(st.integers(0, 3)),
                feather=data.draw(st.integers(0, 4)),
                max_pastes=2,
                match_brightness=False,
                respect_cooccurrence=data.draw(st.booleans()),
                p=1.0,
            ),
            A.HorizontalFlip(p=0.5),
        ]
    )
    transform.set_random_seed(data.draw(st.integers(0, 2**16)))
    out = transform(image=image, mask=mask, image_id=target_id)
    new_image, new_mask = out["image"], out["mask"]
    assert new_image.shape == image.shape and new_image.dtype == image.dtype
    assert new_mask.shape == mask.shape and new_mask.dtype == mask.dtype
    assert set(np.unique(new_mask).tolist()) <= {0.0, 1.0}
    for k, value in enumerate(_VALUES):  # alignment: a pixel has class k's value exactly where its mask is set
        np.testing.assert_array_equal(new_image[..., 0] == value, new_mask[..., k] > 0)
    # the target's defects survive (pastes only add pixels) and new classes come from donors of them
    assert ((new_mask > 0).sum(axis=(0, 1)) >= (mask > 0).sum(axis=(0, 1))).all()
    new = (new_mask > 0).any(axis=(0, 1)) & ~(mask > 0).any(axis=(0, 1))
    assert {c for c, n in zip(_CLASS_IDS, new, strict=True) if n} <= {c for c in _CLASS_IDS if pool.donors[c]}


@_SETTINGS
@given(scene=_pool_and_target(), seed=st.integers(0, 2**16), class_index=st.integers(0, len(_CLASS_IDS) - 1))
def test_single_class_masks_of_a_segmenter_stay_exact(scene: tuple, seed: int, class_index: int) -> None:
    pool, target_id, image, mask = scene
    transform = A.Compose([CopyPaste(pool, mask_class=_CLASS_IDS[class_index], max_pastes=3, match_brightness=False,
                                     p=1.0)])  # fmt: skip
    transform.set_random_seed(seed)
    out = transform(image=image, mask=mask[..., class_index], image_id=target_id)
    assert out["mask"].shape == image.shape[:2]
    np.testing.assert_array_equal(out["image"][..., 0] == _VALUES[class_index], out["mask"] > 0)
    assert (out["mask"][mask[..., class_index] > 0] > 0).all()  # the target's own defects survive


@_SETTINGS
@given(scene=_pool_and_target(noisy=False), seed=st.integers(0, 2**16))
def test_blended_steel_has_no_seam(scene: tuple, seed: int) -> None:
    """Uniform steel of different brightness in donor and target: after a matched paste it is all the target's."""
    pool, target_id, image, mask = scene
    transform = A.Compose([CopyPaste(pool, feather=4, max_pastes=2, p=1.0)])
    transform.set_random_seed(seed)
    out = transform(image=image, mask=mask, image_id=target_id)
    steel = out["mask"].max(axis=2) == 0
    background = int(image[..., 0][mask.max(axis=2) == 0][0]) if (mask.max(axis=2) == 0).any() else None
    if background is not None:
        assert np.abs(out["image"][steel].astype(int) - background).max() <= 1
    assert (out["image"][~steel][:, 0] > 100).all()  # defects stay brighter than any steel


def _two_class_pool(cooccur: bool) -> tuple[DonorPool, np.ndarray, np.ndarray]:
    """Class 1 on the target; the donor holds class 3 (and class 1 too when ``cooccur``)."""
    h, w = 32, 48
    target = np.full((h, w, 3), 80, np.uint8)
    target_masks = np.zeros((3, h, w), bool)
    target_masks[0, 2:8, 2:8] = True
    target[2:8, 2:8] = _VALUES[0]
    donor = np.full((h, w, 3), 90, np.uint8)
    donor_masks = np.zeros((3, h, w), bool)
    donor_masks[1, 10:20, 20:30] = True
    donor[10:20, 20:30] = _VALUES[1]
    if cooccur:
        donor_masks[0, 25:30, 2:6] = True
        donor[25:30, 2:6] = _VALUES[0]
    images, masks = {"t": target, "d": donor}, {"t": target_masks, "d": donor_masks}
    labels = np.array([m.reshape(3, -1).any(axis=1) for m in masks.values()])
    pool = DonorPool.build(_Store(images), list(images), labels, _CLASS_IDS, masks.__getitem__)
    return pool, target, target_masks.transpose(1, 2, 0).astype(np.float32)


@pytest.mark.parametrize("cooccur", [False, True])
def test_classes_never_seen_together_are_not_pasted_together(cooccur: bool) -> None:
    pool, image, mask = _two_class_pool(cooccur)
    transform = A.Compose([CopyPaste(pool, class_rates={3: 1.0}, p=1.0)])
    pasted = 0
    for seed in range(10):
        transform.set_random_seed(seed)
        pasted += int(transform(image=image, mask=mask, image_id="t")["mask"][..., 1].any())
    assert pasted == (10 if cooccur else 0)
    free = A.Compose([CopyPaste(pool, class_rates={3: 1.0}, respect_cooccurrence=False, p=1.0)])
    assert free(image=image, mask=mask, image_id="t")["mask"][..., 1].any()
    never = A.Compose([CopyPaste(pool, class_rates={3: 0.0}, p=1.0)])  # unlisted classes have rate 0
    out = never(image=image, mask=mask, image_id="t")
    np.testing.assert_array_equal(out["image"], image)
    np.testing.assert_array_equal(out["mask"], mask)


def test_seeded_pastes_repeat() -> None:
    pool, image, mask = _two_class_pool(True)
    transform = A.Compose([CopyPaste(pool, p=1.0)])
    outs = []
    for _ in range(2):
        transform.set_random_seed(7)
        outs.append(transform(image=image, mask=mask, image_id="t"))
    np.testing.assert_array_equal(outs[0]["image"], outs[1]["image"])
    np.testing.assert_array_equal(outs[0]["mask"], outs[1]["mask"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"class_rates": {9: 1.0}}, r"unknown classes \[9\]; valid ids are \[1, 3, 4\]"),
        ({"class_rates": {1: 2.0}}, r"must lie in \[0, 1\]"),
        ({"mask_class": 2}, "mask_class 2 is not one of"),
        ({"feather": -1}, "feather must be an integer >= 0"),
    ],
)
def test_bad_settings_name_the_value(kwargs: dict, message: str) -> None:
    pool, _, _ = _two_class_pool(True)
    with pytest.raises(ValueError, match=message):
        CopyPaste(pool, **kwargs)


def test_build_augmentations_puts_copy_paste_before_the_crop() -> None:
    pool, _, _ = _two_class_pool(True)
    specs = [AugmentSpec("hflip"), AugmentSpec("copy_paste", p=0.5, params={"class_rates": {"3": 1.0}})]
    transform = build_augmentations(specs, CropConfig(16, 16, 0.5), pool=pool, mask_class=3)
    assert isinstance(transform.transforms[0], CopyPaste) and transform.transforms[0].class_rates == {3: 1.0}
    assert transform.transforms[0].mask_class == 3
    with pytest.raises(ValueError, match="needs a donor pool"):
        build_augmentations(specs)
    with pytest.raises(ValueError, match=r"bad parameters \['angle'\] for augmentation 'copy_paste'"):
        build_augmentations([AugmentSpec("copy_paste", params={"angle": 3})], pool=pool)


def test_classifier_labels_follow_the_pasted_defects() -> None:
    pool, _, _ = _two_class_pool(True)
    labels = np.array([[1, 0, 0]], dtype=bool)  # the target: class 1 only
    transform = build_augmentations([AugmentSpec("copy_paste", p=1.0, params={"class_rates": {3: 1.0}})], pool=pool)
    dataset = ClassifierDataset(
        pool.store, ["t"], labels, Normalization(), transform, stride=16, masks=pool.full_masks, mask_output=False
    )
    image, got = dataset[0]
    assert image.shape == (3, 32, 48)
    torch.testing.assert_close(got, torch.tensor([1.0, 1.0, 0.0]))
    plain = ClassifierDataset(pool.store, ["t"], labels, Normalization(), None, stride=16, masks=pool.full_masks)
    _, (plain_labels, plain_masks) = plain[0]
    torch.testing.assert_close(plain_labels, torch.tensor([1.0, 0.0, 0.0]))
    assert plain_masks.shape == (3, 32, 48)


def test_the_seam_fades_over_the_feather() -> None:
    """Black target steel, grey donor steel, no brightness matching: the pasted steel fades in, no step."""
    pool, image, mask = _two_class_pool(False)
    image = np.where(image == 80, 0, image).astype(np.uint8)
    pool.store.images["t"] = image
    for feather in (0, 4):
        transform = A.Compose([CopyPaste(pool, class_rates={3: 1.0}, context=2, feather=feather,
                                         match_brightness=False, respect_cooccurrence=False, p=1.0)])  # fmt: skip
        transform.set_random_seed(0)
        out = transform(image=image, mask=mask, image_id="t")
        assert out["mask"][..., 1].any()
        grey = out["image"][..., 0].astype(int)
        steel = out["mask"].max(axis=2) == 0
        both = steel[:, 1:] & steel[:, :-1]
        step = np.abs(np.diff(grey, axis=1))[both].max()
        assert step == 90 if feather == 0 else step <= 90 / (feather + 1) + 1


def test_trainers_run_with_copy_paste(synth_dir: Path, tmp_path: Path) -> None:
    """The recipe's copy_paste reaches the classifier folds and the segmenters (one tiny epoch each)."""
    augment = [{"name": "copy_paste", "p": 1.0, "params": {"class_rates": {3: 1.0, 4: 0.5}}}, {"name": "hflip"}]
    config = tiny_config(synth_dir, tmp_path, **{"augment": augment, "data.limit": 12, "classifier.final": "fold"})
    result = run_pipeline(config, stages=["classifier", "hard_negatives", "segmenter"])
    assert (result.run_dir / "segmenter" / "class3" / "best.pt").is_file()
