"""Input preprocessing: validate images, resize, normalise, pad or tile them into network batches.

An ``InputPlan`` turns a list of images of any sizes into *units* (the arrays a network sees) grouped
by their padded shape, so each group is one batch. In ``"pad"`` mode an image is one unit padded at the
bottom and right to a multiple of the stride; in ``"tile"`` mode a wide image is cut into tiles of
``tile_width`` columns overlapping by ``tile_overlap`` (the last tile is shifted left to end at the
image's edge, so all tiles have the same width). The plan also undoes itself: ``assemble`` stitches a
unit's probability maps back into one map at the input image's size (tiles averaged where they
overlap, the resize of ``scale`` < 1 undone with bilinear interpolation).

Padding is zeros *after* normalisation (the dataset's mean colour), identical in every runtime.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from cascade.manifest import InputPolicy, Normalization

__all__ = [
    "InputPlan",
    "Unit",
    "as_image_list",
    "check_image",
    "network_pixels",
    "normalize",
    "padded_size",
    "plan_inputs",
    "tile_spans",
]


def check_image(image: object, index: int = 0) -> np.ndarray:
    """Validate one input image and return it as RGB.

    Args:
        image: ``(H, W)`` grayscale or ``(H, W, 3)`` RGB uint8 numpy array.
        index: position in the batch, named in errors.

    Returns:
        ``(H, W, 3)`` uint8 array (the input itself when already RGB).

    Raises:
        ValueError: not a numpy array, wrong shape or dtype, or an empty image.
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(
            f"image {index}: expected a numpy array of shape (H, W) or (H, W, 3) uint8, got {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        raise ValueError(
            f"image {index}: dtype {image.dtype} is not allowed; expected uint8 (convert with cascade.imageio.to_rgb)"
        )
    if image.ndim == 2:
        rgb = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 3:
        rgb = image
    else:
        raise ValueError(
            f"image {index}: shape {image.shape} is not allowed; expected (H, W) grayscale or (H, W, 3) RGB "
            "(convert with cascade.imageio.to_rgb)"
        )
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"image {index}: shape {image.shape} is empty; height and width must be >= 1")
    return rgb


def normalize(image: np.ndarray, normalization: Normalization) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> ``(3, H, W)`` float32 ``(x / 255 - mean) / std``."""
    std = np.asarray(normalization.std, dtype=np.float32)
    scale = (1.0 / (255.0 * std))[:, None, None]
    offset = (-np.asarray(normalization.mean, dtype=np.float32) / std)[:, None, None]
    out = image.transpose(2, 0, 1).astype(np.float32)
    out *= scale
    out += offset
    return out


def padded_size(size: int, stride: int) -> int:
    """Smallest multiple of ``stride`` that is >= ``size``."""
    return -(-size // stride) * stride


def network_pixels(height: int, width: int, policy: InputPolicy) -> int:
    """Pixels (per channel) the networks see for one ``height`` x ``width`` image under ``policy``.

    The sum of its units' padded areas, as ``InputPlan`` builds them: after the ``scale`` (and ``scale_x``)
    resize, padded to a multiple of the stride, or cut into overlapping tiles. Thin images cost far more than their
    pixels.
    """
    height, width = policy.net_size(height, width)
    if policy.mode == "tile" and policy.tile_width is not None and width > policy.tile_width:
        tiles = len(tile_spans(width, policy.tile_width, policy.tile_overlap))
        widths = tiles * padded_size(policy.tile_width, policy.stride)
    else:
        widths = padded_size(width, policy.stride)
    return padded_size(height, policy.stride) * widths


def tile_spans(width: int, tile_width: int, overlap: int) -> list[tuple[int, int]]:
    """Column spans ``[(x0, x1), ...]`` covering ``width`` with tiles of ``tile_width`` overlapping by ``overlap``.

    Every span is ``tile_width`` wide (the last one is shifted left to end at ``width``), except when the
    image is narrower than one tile: then the single span is ``(0, width)``.
    """
    if width <= tile_width:
        return [(0, width)]
    step = tile_width - overlap
    starts = [*range(0, width - tile_width, step), width - tile_width]
    return [(x0, x0 + tile_width) for x0 in sorted(set(starts))]


@dataclass(frozen=True)
class Unit:
    """One network input: columns ``[x0, x1)`` of image ``image`` (network coordinates)."""

    image: int
    x0: int
    x1: int


class InputPlan:
    """Network batches for a list of images, and the way back to input-size maps.

    Attributes:
        shapes: ``(H, W)`` of every input image.
        net_shapes: ``(h, w)`` the networks see for every image (after ``scale``).
        units: all units, image by image.
        groups: padded shape ``(Hp, Wp)`` -> unit indices of that shape.
    """

    def __init__(self, images: Sequence[np.ndarray], policy: InputPolicy, normalization: Normalization) -> None:
        self.policy = policy
        self.shapes: list[tuple[int, int]] = []
        self.net_shapes: list[tuple[int, int]] = []
        self.units: list[Unit] = []
        self._unit_shapes: list[tuple[int, int]] = []
        resized: list[np.ndarray] = []
        for index, image in enumerate(images):
            rgb = check_image(image, index)
            height, width = rgb.shape[:2]
            self.shapes.append((height, width))
            net_h, net_w = policy.net_size(height, width)
            if (net_h, net_w) != (height, width):
                rgb = cv2.resize(np.ascontiguousarray(rgb), (net_w, net_h), interpolation=cv2.INTER_AREA)
            h, w = rgb.shape[:2]
            self.net_shapes.append((h, w))
            resized.append(rgb)
            spans = tile_spans(w, policy.tile_width, policy.tile_overlap) if policy.mode == "tile" else [(0, w)]
            for x0, x1 in spans:
                self.units.append(Unit(index, x0, x1))
                self._unit_shapes.append((padded_size(h, policy.stride), padded_size(x1 - x0, policy.stride)))
        self.groups: dict[tuple[int, int], np.ndarray] = {}
        for shape in dict.fromkeys(self._unit_shapes):
            self.groups[shape] = np.array([u for u, s in enumerate(self._unit_shapes) if s == shape], dtype=np.int64)
        self._batches = {shape: self._fill(shape, idx, resized, normalization) for shape, idx in self.groups.items()}
        self._unit_image = np.array([u.image for u in self.units], dtype=np.int64)
        self._image_units: list[list[int]] = [[] for _ in self.shapes]
        for u, unit in enumerate(self.units):
            self._image_units[unit.image].append(u)

    def _fill(
        self, shape: tuple[int, int], unit_indices: np.ndarray, resized: list[np.ndarray], normalization: Normalization
    ) -> np.ndarray:
        """Normalise each unit's pixels straight into its zero-padded batch row."""
        batch = np.zeros((len(unit_indices), 3, *shape), dtype=np.float32)
        for row, u in enumerate(unit_indices):
            unit = self.units[u]
            chw = normalize(resized[unit.image][:, unit.x0 : unit.x1], normalization)
            batch[row, :, : chw.shape[1], : chw.shape[2]] = chw
        return batch

    @property
    def num_images(self) -> int:
        """Number of input images."""
        return len(self.shapes)

    def batches(
        self, images: Sequence[int] | np.ndarray | None = None, max_batch: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(unit_indices, batch (n, 3, Hp, Wp) float32)`` for all units of the given images.

        Args:
            images: image indices to include (all when None).
            max_batch: split groups into batches of at most this many units.
        """
        wanted = None if images is None else np.isin(self._unit_image, np.asarray(images, dtype=np.int64))
        for shape, unit_indices in self.groups.items():
            batch = self._batches[shape]
            if wanted is not None:
                keep = wanted[unit_indices]
                if not keep.any():
                    continue
                if not keep.all():
                    unit_indices, batch = unit_indices[keep], batch[keep]
            step = max_batch or len(unit_indices)
            for start in range(0, len(unit_indices), step):
                yield unit_indices[start : start + step], batch[start : start + step]

    def reduce_max(self, unit_values: np.ndarray) -> np.ndarray:
        """Per-image maximum over its units: ``(num_units, C)`` -> ``(N, C)`` (identity in pad mode)."""
        out = np.full((self.num_images, unit_values.shape[1]), -np.inf, dtype=unit_values.dtype)
        np.maximum.at(out, self._unit_image, unit_values)
        return out

    def assemble(self, image: int, unit_maps: dict[int, np.ndarray]) -> np.ndarray:
        """Stitch the maps of one image's units back to the input size.

        Args:
            image: image index.
            unit_maps: unit index -> ``(Hp, Wp)`` map for every unit of ``image``.

        Returns:
            ``(H, W)`` float32 map at the input image's size.
        """
        h, w = self.net_shapes[image]
        units = self._image_units[image]
        if len(units) == 1:
            out = np.ascontiguousarray(unit_maps[units[0]][:h, :w], dtype=np.float32)
        else:
            out = np.zeros((h, w), dtype=np.float32)
            count = np.zeros((w,), dtype=np.float32)
            for u in units:
                unit = self.units[u]
                out[:, unit.x0 : unit.x1] += unit_maps[u][:h, : unit.x1 - unit.x0]
                count[unit.x0 : unit.x1] += 1.0
            out /= count[None, :]
        height, width = self.shapes[image]
        if (h, w) != (height, width):
            out = cv2.resize(out, (width, height), interpolation=cv2.INTER_LINEAR)
        return out


def plan_inputs(images: Sequence[np.ndarray], policy: InputPolicy, normalization: Normalization) -> InputPlan:
    """Validate, resize, normalise and pad/tile ``images`` into batches grouped by padded shape.

    Raises:
        ValueError: an image has a wrong type, shape or dtype (the message names it and what is allowed).
    """
    return InputPlan(as_image_list(images), policy, normalization)


def as_image_list(images: object) -> list[np.ndarray]:
    """The images of a batch as a list: a sequence of arrays, or one ``(N, H, W[, 3])`` stacked array.

    Raises:
        ValueError: a single image was passed where a batch is expected, or ``images`` is not a sequence.
    """
    if isinstance(images, np.ndarray):
        if images.ndim == 2 or (images.ndim == 3 and images.shape[-1] == 3):
            raise ValueError(
                f"got a single image of shape {images.shape}; pass a list of images, e.g. [image], "
                "or a stacked (N, H, W) / (N, H, W, 3) array"
            )
        if images.ndim not in (3, 4):
            raise ValueError(
                f"stacked images of shape {images.shape} are not allowed; expected (N, H, W) or (N, H, W, 3)"
            )
        return list(images)
    if isinstance(images, str | bytes) or not isinstance(images, Sequence):
        raise ValueError(f"images must be a sequence of numpy arrays, got {type(images).__name__}")
    return list(images)
