"""Defect copy-paste augmentation: cut a defect cluster with its surroundings out of one training image and
paste it into another, so rare classes are seen more often and on more backgrounds.

``CopyPaste`` is an albumentations ``DualTransform`` (``image`` + ``mask``). A paste of class ``c``:

1. picks a donor among the training images holding ``c`` (``DonorPool``), the donor's ``c`` pixels grown by
   ``context`` pixels split into connected clusters, and one cluster: its *core* is the grown cluster, so it
   carries the defect and a ring of the donor's own steel around it;
2. places the core at a random spot of the target where it covers no known defect of the target
   (``attempts`` tries, else no paste), and, with ``respect_cooccurrence``, only when every class in the core
   has been seen on one image with every class already on the target;
3. blends: opaque on the core, fading to the target over ``feather`` more pixels, never over a defect of the
   target nor over another defect of the donor (so nothing unlabelled comes along); with
   ``match_brightness`` the donor patch is shifted to the target's mean brightness around it first. Seam and
   brightness step are therefore no cue for the networks;
4. sets the mask to the donor's masks on the core only, where the blend is opaque: the pasted mask is exact
   and keeps the donor's class ids (a core holding two classes carries both).

Masks: ``(h, w, C)`` coverage of all the pool's classes in ``class_ids`` order (the classifier's targets), or,
with ``mask_class``, ``(h, w)`` of that class alone (a segmenter's target; pastes of other classes then only
change the image, hard negatives for free). Passing ``image_id=`` to the pipeline call lets a single-class
target avoid the image's other classes as well (``DonorPool.masks``). Per-class ``class_rates`` (the chance
a paste of that class is tried when the transform fires; listed classes only) oversample rare classes; e.g.
the recipe's ``augment: [{name: copy_paste, p: 0.5, params: {class_rates: {2: 1.0}}}]``. It runs first in
``training.data.build_augmentations`` (before the crop), on network-scale images, so ``context`` and
``feather`` are network pixels. Randomness comes from the transform's ``random_generator``: seeded pipelines
stay deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import albumentations as A
import cv2
import numpy as np

from training.image_store import ImageStore

__all__ = ["COPY_PASTE", "CopyPaste", "DonorPool", "uses_copy_paste"]

COPY_PASTE = "copy_paste"
"""Name of the transform in the recipe's ``augment`` list."""


def uses_copy_paste(specs: Sequence[Any]) -> bool:
    """True when an ``augment`` list (``AugmentSpec``s) holds ``copy_paste``."""
    return any(spec.name == COPY_PASTE for spec in specs)


@dataclass(frozen=True)
class DonorPool:
    """Training images defects are cut from, read at the network scale.

    Attributes:
        class_ids: the classes, in mask channel order.
        donors: class id -> image ids holding that class.
        cooccurrence: ``(C, C)`` bool, True where two classes were seen on one image (diagonal True).
        store: image source (``training.image_store.ImageStore``); coverage cached under ``(image_id, "all")``.
        full_masks: image id -> full-size ``(C, H, W)`` bool masks.
    """

    class_ids: tuple[int, ...]
    donors: Mapping[int, tuple[str, ...]]
    cooccurrence: np.ndarray
    store: ImageStore
    full_masks: Callable[[str], np.ndarray]

    @classmethod
    def build(
        cls,
        store: ImageStore,
        image_ids: Sequence[str],
        labels: np.ndarray,
        class_ids: Sequence[int],
        full_masks: Callable[[str], np.ndarray],
    ) -> DonorPool:
        """A pool over ``image_ids`` (training images only: never validation ones).

        Args:
            labels: ``(N, C)`` bool presence in ``image_ids`` order.
        """
        labels = np.asarray(labels, dtype=bool)
        if labels.shape != (len(image_ids), len(class_ids)):
            raise ValueError(f"labels must be ({len(image_ids)}, {len(class_ids)}), got {labels.shape}")
        donors = {
            c: tuple(i for i, y in zip(image_ids, labels[:, k], strict=True) if y) for k, c in enumerate(class_ids)
        }
        counts = labels.T.astype(np.int64) @ labels.astype(np.int64)
        return cls(tuple(class_ids), donors, (counts > 0) | np.eye(len(class_ids), dtype=bool), store, full_masks)

    def image(self, image_id: str) -> np.ndarray:
        """``(h, w, 3)`` uint8 at the network scale."""
        return self.store.image(image_id)

    def masks(self, image_id: str) -> np.ndarray:
        """``(h, w, C)`` float32 coverage at the network scale."""
        return self.store.coverage((image_id, "all"), lambda: self.full_masks(image_id))


@dataclass(frozen=True)
class _Paste:
    y: int
    x: int
    image: np.ndarray  # (ph, pw, 3) float32, brightness-matched donor patch
    masks: np.ndarray  # (ph, pw, C) donor coverage
    alpha: np.ndarray  # (ph, pw) float32 blend weight, 1 on the core
    core: np.ndarray  # (ph, pw) bool


class CopyPaste(A.DualTransform):
    """Paste defect clusters from a ``DonorPool`` into the image and its mask (see the module docstring).

    Args:
        pool: the donors.
        class_rates: class id -> chance a paste of it is tried when the transform fires (default: 1 for all).
        context: pixels of the donor's steel kept opaque around the defect.
        feather: width (pixels) of the blend from the pasted patch to the target.
        max_pastes: pastes per image at most.
        attempts: donors / placements tried per class before giving up.
        match_brightness: shift the patch to the target's mean brightness around it.
        respect_cooccurrence: paste only class combinations seen on one training image.
        mask_class: the mask is ``(h, w)`` of this class (a segmenter's); None: ``(h, w, C)`` of all classes.
        p: probability the transform fires.
    """

    def __init__(
        self,
        pool: DonorPool,
        class_rates: Mapping[int | str, float] | None = None,
        context: int = 4,
        feather: int = 6,
        max_pastes: int = 1,
        attempts: int = 10,
        match_brightness: bool = True,
        respect_cooccurrence: bool = True,
        mask_class: int | None = None,
        p: float = 0.5,
    ) -> None:
        super().__init__(p=p)
        ids = pool.class_ids
        rates = {int(k): float(v) for k, v in (class_rates or dict.fromkeys(ids, 1.0)).items()}
        unknown = sorted(set(rates) - set(ids))
        if unknown:
            raise ValueError(f"copy_paste class_rates name unknown classes {unknown}; valid ids are {list(ids)}")
        if any(not 0.0 <= r <= 1.0 for r in rates.values()):
            raise ValueError(f"copy_paste class_rates must lie in [0, 1], got {rates}")
        if mask_class is not None and mask_class not in ids:
            raise ValueError(f"copy_paste mask_class {mask_class!r} is not one of {list(ids)}")
        for name, value, low in (("context", context, 0), ("feather", feather, 0), ("max_pastes", max_pastes, 1),
                                 ("attempts", attempts, 1)):  # fmt: skip
            if not isinstance(value, int) or value < low:
                raise ValueError(f"copy_paste {name} must be an integer >= {low}, got {value!r}")
        self.pool, self.class_rates, self.mask_class = pool, rates, mask_class
        self.context, self.feather, self.max_pastes, self.attempts = context, feather, max_pastes, attempts
        self.match_brightness, self.respect_cooccurrence = match_brightness, respect_cooccurrence

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("class_rates", "context", "feather", "max_pastes", "attempts", "match_brightness",
                "respect_cooccurrence", "mask_class")  # fmt: skip

    # ------------------------------------------------------------------------------------------- params
    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        image, mask = data["image"], data.get("mask")
        if mask is None:
            raise ValueError("copy_paste needs the mask: call the pipeline with image= and mask=")
        occupied, present = self._target_defects(mask, data.get("image_id"), image.shape[:2])
        ids = self.pool.class_ids
        rng = self.random_generator
        tried = [c for c in ids if self.pool.donors.get(c) and rng.random() < self.class_rates.get(c, 0.0)]
        rng.shuffle(tried)
        pastes: list[_Paste] = []
        for class_id in tried:
            if len(pastes) >= self.max_pastes:
                break
            paste = self._find_paste(class_id, image, occupied, present, data.get("image_id"))
            if paste is not None:
                pastes.append(paste)
                ph, pw = paste.core.shape
                occupied[paste.y : paste.y + ph, paste.x : paste.x + pw] |= paste.core
                present |= paste.masks[paste.core].max(axis=0) > 0
        return {"pastes": pastes}

    def _target_defects(self, mask: np.ndarray, image_id: str | None, shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
        """``(occupied (h, w) bool, present (C,) bool)``: the target's known defect pixels and classes."""
        full = mask if self.mask_class is None else None
        if full is None and image_id is not None:
            full = self.pool.masks(image_id)
            full = full if full.shape[:2] == tuple(shape) else None
        if full is not None:
            if full.ndim != 3 or full.shape[2] != len(self.pool.class_ids):
                raise ValueError(f"copy_paste mask must be (h, w, {len(self.pool.class_ids)}), got {full.shape}")
            positive = full > 0
            return positive.any(axis=2), positive.reshape(-1, positive.shape[2]).any(axis=0)
        positive = mask > 0
        present = np.zeros(len(self.pool.class_ids), dtype=bool)
        present[self.pool.class_ids.index(self.mask_class)] = positive.any()
        return positive.copy(), present

    def _allowed(self, classes: np.ndarray, present: np.ndarray) -> bool:
        if not self.respect_cooccurrence:
            return True
        return bool(self.pool.cooccurrence[np.ix_(classes, present | classes)].all())

    def _find_paste(
        self, class_id: int, image: np.ndarray, occupied: np.ndarray, present: np.ndarray, image_id: str | None
    ) -> _Paste | None:
        rng, pool = self.random_generator, self.pool
        donors = [d for d in pool.donors[class_id] if d != image_id] or list(pool.donors[class_id])
        k = pool.class_ids.index(class_id)
        h, w = image.shape[:2]
        kernel = np.ones((3, 3), np.uint8)
        for _ in range(self.attempts):
            donor = donors[int(rng.integers(len(donors)))]
            masks = pool.masks(donor)
            defect = (masks[..., k] > 0).astype(np.uint8)
            if not defect.any():
                continue
            grown = cv2.dilate(defect, kernel, iterations=self.context) if self.context else defect
            count, labels = cv2.connectedComponents(grown, connectivity=8)
            core = labels == int(rng.integers(1, count))
            classes = (masks[core] > 0).any(axis=0)
            if not self._allowed(classes, present):
                continue
            ys, xs = np.nonzero(core)
            y0, x0 = max(ys.min() - self.feather, 0), max(xs.min() - self.feather, 0)
            y1, x1 = min(ys.max() + 1 + self.feather, core.shape[0]), min(xs.max() + 1 + self.feather, core.shape[1])
            ph, pw = y1 - y0, x1 - x0
            if ph > h or pw > w:
                continue
            core = core[y0:y1, x0:x1]
            spot = self._place(core, occupied, rng)
            if spot is None:
                continue
            ty, tx = spot
            alpha = self._alpha(core, masks[y0:y1, x0:x1], occupied[ty : ty + ph, tx : tx + pw], kernel)
            patch = pool.image(donor)[y0:y1, x0:x1].astype(np.float32)
            if self.match_brightness:
                steel = (alpha > 0) & ~(masks[y0:y1, x0:x1] > 0).any(axis=2)
                patch = self._matched(patch, image[ty : ty + ph, tx : tx + pw], steel)
            return _Paste(ty, tx, patch, masks[y0:y1, x0:x1].copy(), alpha, core)
        return None

    def _place(self, core: np.ndarray, occupied: np.ndarray, rng: np.random.Generator) -> tuple[int, int] | None:
        ph, pw = core.shape
        h, w = occupied.shape
        for _ in range(self.attempts):
            ty, tx = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
            if not (occupied[ty : ty + ph, tx : tx + pw] & core).any():
                return ty, tx
        return None

    def _alpha(self, core: np.ndarray, masks: np.ndarray, occupied: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        """Blend weight: 1 on the core, fading over ``feather`` pixels; 0 on other donor and target defects."""
        if self.feather:
            distance = cv2.distanceTransform((~core).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
            alpha = np.clip(1.0 - distance / (self.feather + 1), 0.0, 1.0).astype(np.float32)
        else:
            alpha = core.astype(np.float32)
        others = cv2.dilate(((masks > 0).any(axis=2) & ~core).astype(np.uint8), kernel).astype(bool)
        alpha[(others | occupied) & ~core] = 0.0
        return alpha

    @staticmethod
    def _matched(patch: np.ndarray, target: np.ndarray, steel: np.ndarray) -> np.ndarray:
        """The ``(ph, pw, 3)`` donor patch shifted per channel to the target's mean over ``steel``, the pasted
        pixels free of any donor defect."""
        if not steel.any():
            return patch
        shift = target[steel].astype(np.float32).mean(axis=0) - patch[steel].mean(axis=0)
        return np.clip(patch + shift, 0, 255)

    # -------------------------------------------------------------------------------------------- apply
    def apply(self, img: np.ndarray, pastes: Sequence[_Paste], **params: Any) -> np.ndarray:
        """Blend the pastes into the ``(h, w, 3)`` image."""
        if not pastes:
            return img
        out = img.astype(np.float32)
        for paste in pastes:
            ph, pw = paste.core.shape
            region = out[paste.y : paste.y + ph, paste.x : paste.x + pw]
            alpha = paste.alpha[..., None]
            region[...] = alpha * paste.image + (1.0 - alpha) * region
        return np.clip(np.rint(out), 0, 255).astype(img.dtype) if img.dtype == np.uint8 else out.astype(img.dtype)

    def apply_to_mask(self, mask: np.ndarray, pastes: Sequence[_Paste], **params: Any) -> np.ndarray:
        """The donor's masks on each paste's core (``(h, w, C)``, or ``(h, w)`` of ``mask_class``)."""
        if not pastes:
            return mask
        out = mask.copy()
        channel = None if self.mask_class is None else self.pool.class_ids.index(self.mask_class)
        for paste in pastes:
            ph, pw = paste.core.shape
            region = out[paste.y : paste.y + ph, paste.x : paste.x + pw]
            values = paste.masks[paste.core] if channel is None else paste.masks[paste.core][:, channel]
            region[paste.core] = values.astype(out.dtype) if out.dtype != bool else values > 0
        return out
