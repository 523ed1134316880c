"""Saving predicted masks as PNG files and colour overlays for people to look at.

One mask PNG per image, ``<masks_dir>/masks/<file name>.png`` (e.g. ``masks/0002cc93b.jpg.png``): an
8-bit palette PNG whose pixel value is a **bitmask** of the classes, bit ``k`` (value ``1 << k``) set
where class ``k + 1`` is predicted, so overlapping predictions survive (0 = background, 1 = class 1,
2 = class 2, 4 = class 3, 8 = class 4, 3 = classes 1 and 2, ...). The palette paints the values in
the class colours, so the file is also viewable as is. ``read_mask_png`` turns it back into
``(4, H, W)`` bool. The overlay ``<masks_dir>/overlays/<file name>.jpg`` is the image with each class's
mask blended in its colour.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cascade.constants import NUM_CLASSES
from cascade.results import ImagePrediction

__all__ = [
    "CLASS_COLOURS",
    "mask_png_path",
    "overlay_path",
    "read_mask_png",
    "render_overlay",
    "write_mask_outputs",
    "write_mask_png",
]

CLASS_COLOURS: tuple[tuple[int, int, int], ...] = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 200, 0))
"""RGB colour of each class, in class-id order."""

_ALPHA = 0.45


def _palette() -> list[int]:
    colours = np.array(CLASS_COLOURS, dtype=np.float32)
    palette = np.zeros((256, 3), dtype=np.uint8)
    for value in range(1, 1 << NUM_CLASSES):
        bits = [k for k in range(NUM_CLASSES) if value >> k & 1]
        palette[value] = colours[bits].mean(axis=0).round().astype(np.uint8)
    return palette.reshape(-1).tolist()


_PALETTE = _palette()


def mask_png_path(masks_dir: str | Path, image_id: str) -> Path:
    """Where the mask PNG of ``image_id`` goes."""
    return Path(masks_dir) / "masks" / f"{image_id}.png"


def overlay_path(masks_dir: str | Path, image_id: str) -> Path:
    """Where the overlay JPEG of ``image_id`` goes."""
    return Path(masks_dir) / "overlays" / f"{image_id}.jpg"


def write_mask_png(path: str | Path, masks: np.ndarray) -> None:
    """Write ``masks`` ``(4, H, W)`` bool as one bitmask palette PNG."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3 or masks.shape[0] != NUM_CLASSES:
        raise ValueError(f"masks of shape {masks.shape}; expected ({NUM_CLASSES}, H, W)")
    weights = (1 << np.arange(NUM_CLASSES, dtype=np.uint8))[:, None, None]
    value = (masks.astype(np.uint8) * weights).sum(axis=0, dtype=np.uint8)
    img = Image.frombytes("P", (value.shape[1], value.shape[0]), np.ascontiguousarray(value).tobytes())
    img.putpalette(_PALETTE)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", optimize=False)


def read_mask_png(path: str | Path) -> np.ndarray:
    """Read a bitmask PNG written by ``write_mask_png`` as ``(4, H, W)`` bool."""
    with Image.open(path) as img:
        if img.mode not in ("P", "L"):
            raise ValueError(f"{path}: mask PNG has mode {img.mode!r}; expected 'P' or 'L' (a class bitmask)")
        value = np.asarray(img)
    return np.stack([(value >> k & 1).astype(bool) for k in range(NUM_CLASSES)])


def render_overlay(image: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Blend each class's mask into ``image`` in its colour.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        masks: ``(4, H, W)`` bool.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    out = image.astype(np.float32)
    for k in range(NUM_CLASSES):
        m = np.asarray(masks[k], dtype=bool)
        if m.any():
            out[m] = out[m] * (1.0 - _ALPHA) + np.asarray(CLASS_COLOURS[k], dtype=np.float32) * _ALPHA
    return out.round().clip(0, 255).astype(np.uint8)


def write_mask_outputs(masks_dir: str | Path, image: np.ndarray, prediction: ImagePrediction) -> None:
    """Write the mask PNG and the overlay JPEG of one prediction.

    Args:
        masks_dir: output folder (``masks/`` and ``overlays/`` are created inside).
        image: ``(H, W, 3)`` uint8 RGB, the image that was predicted.
        prediction: its prediction; masks ``(4, H, W)`` at the image's size.
    """
    masks = prediction.masks
    write_mask_png(mask_png_path(masks_dir, prediction.image_id), masks)
    overlay = overlay_path(masks_dir, prediction.image_id)
    overlay.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render_overlay(image, masks)).save(overlay, format="JPEG", quality=90)
