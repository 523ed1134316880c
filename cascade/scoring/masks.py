"""Saving predicted masks as PNG files and colour overlays for people to look at.

One mask PNG per image, ``<masks_dir>/masks/<stem>.png`` (e.g. ``masks/0002cc93b.png`` for ``0002cc93b.jpg``): an
8-bit palette PNG whose pixel value is a **bitmask** of the classes, bit ``id - 1`` (value ``1 << (id - 1)``)
set where class ``id`` is predicted, so overlapping predictions survive (0 = background, 1 = class 1,
2 = class 2, 4 = class 3, 8 = class 4, 3 = classes 1 and 2, ...). The palette paints the values in
the class colours, so the file is also viewable as is. ``read_mask_png`` turns it back into
``(C, H, W)`` bool. The overlay ``<masks_dir>/overlays/<stem>.jpg`` is the image with each class's
mask blended in its colour and a legend of the classes (id, name, colour; the predicted ones marked).
Images of one folder that share a stem (``a.jpg``, ``a.png``) cannot both have masks: ``check_unique_stems``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from cascade.classes import DEFAULT_COLOURS, MAX_CLASS_ID, SEVERSTAL
from cascade.constants import CLASS_IDS
from cascade.results import ImagePrediction

__all__ = [
    "CLASS_COLOURS",
    "check_unique_stems",
    "draw_legend",
    "mask_png_path",
    "missing_mask_outputs",
    "overlay_path",
    "read_mask_png",
    "render_overlay",
    "write_mask_outputs",
    "write_mask_png",
]

CLASS_COLOURS: tuple[tuple[int, int, int], ...] = SEVERSTAL.colours
"""RGB colour of each Severstal class, in class-id order (a bundle's manifest names its own)."""

_ALPHA = 0.45


@functools.lru_cache(maxsize=16)
def _palette(class_ids: tuple[int, ...], colours: tuple[tuple[int, int, int], ...]) -> list[int]:
    rgb = np.array(colours, dtype=np.float32)
    palette = np.zeros((256, 3), dtype=np.uint8)
    for value in range(1, 256):
        present = [k for k, cid in enumerate(class_ids) if value >> (cid - 1) & 1]
        if present:
            palette[value] = rgb[present].mean(axis=0).round().astype(np.uint8)
    return palette.reshape(-1).tolist()


def _class_ids(masks: np.ndarray, class_ids: Sequence[int] | None) -> tuple[int, ...]:
    ids = tuple(CLASS_IDS if class_ids is None else class_ids)
    if masks.ndim != 3 or masks.shape[0] != len(ids):
        raise ValueError(f"masks of shape {masks.shape}; expected ({len(ids)}, H, W) for classes {list(ids)}")
    if any(not 1 <= c <= MAX_CLASS_ID for c in ids):
        raise ValueError(f"class ids {list(ids)} do not fit a mask PNG's 8 bits (allowed 1..{MAX_CLASS_ID})")
    return ids


def mask_png_path(masks_dir: str | Path, image_id: str) -> Path:
    """Where the mask PNG of ``image_id`` goes: ``<masks_dir>/masks/<stem>.png``."""
    return Path(masks_dir) / "masks" / f"{Path(image_id).stem}.png"


def overlay_path(masks_dir: str | Path, image_id: str) -> Path:
    """Where the overlay JPEG of ``image_id`` goes: ``<masks_dir>/overlays/<stem>.jpg``."""
    return Path(masks_dir) / "overlays" / f"{Path(image_id).stem}.jpg"


def check_unique_stems(image_ids: Sequence[str]) -> None:
    """Raise ``ValueError`` naming two images whose mask files would be the same (``a.jpg`` and ``a.png``)."""
    seen: dict[str, str] = {}
    for image_id in image_ids:
        other = seen.setdefault(Path(image_id).stem, image_id)
        if other != image_id:
            raise ValueError(
                f"images {other!r} and {image_id!r} share the stem {Path(image_id).stem!r}, so their mask and "
                "overlay files would overwrite each other; rename one, or score without --masks"
            )


def missing_mask_outputs(masks_dir: str | Path, image_ids: Sequence[str]) -> list[str]:
    """The images of ``image_ids`` whose mask PNG or overlay is not in ``masks_dir``."""
    return [
        i for i in image_ids if not (mask_png_path(masks_dir, i).is_file() and overlay_path(masks_dir, i).is_file())
    ]


def write_mask_png(
    path: str | Path,
    masks: np.ndarray,
    class_ids: Sequence[int] | None = None,
    colours: Sequence[tuple[int, int, int]] | None = None,
) -> None:
    """Write ``masks`` ``(C, H, W)`` bool of ``class_ids`` (default Severstal's) as one bitmask palette PNG."""
    masks = np.asarray(masks, dtype=bool)
    ids = _class_ids(masks, class_ids)
    rgb = tuple(colours) if colours is not None else tuple(DEFAULT_COLOURS[c - 1] for c in ids)
    weights = np.array([1 << (c - 1) for c in ids], dtype=np.uint8)[:, None, None]
    value = (masks.astype(np.uint8) * weights).sum(axis=0, dtype=np.uint8)
    img = Image.frombytes("P", (value.shape[1], value.shape[0]), np.ascontiguousarray(value).tobytes())
    img.putpalette(_palette(ids, tuple(tuple(c) for c in rgb)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", optimize=False)


def read_mask_png(path: str | Path, class_ids: Sequence[int] | None = None) -> np.ndarray:
    """Read a bitmask PNG of ``write_mask_png`` as ``(C, H, W)`` bool for ``class_ids`` (default Severstal's)."""
    ids = tuple(CLASS_IDS if class_ids is None else class_ids)
    with Image.open(path) as img:
        if img.mode not in ("P", "L"):
            raise ValueError(f"{path}: mask PNG has mode {img.mode!r}; expected 'P' or 'L' (a class bitmask)")
        value = np.asarray(img)
    return np.stack([(value >> (c - 1) & 1).astype(bool) for c in ids])


def render_overlay(
    image: np.ndarray, masks: np.ndarray, colours: Sequence[tuple[int, int, int]] = CLASS_COLOURS
) -> np.ndarray:
    """Blend each class's mask into ``image`` in its colour.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        masks: ``(C, H, W)`` bool.
        colours: one RGB colour per mask (default Severstal's).

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    if len(colours) != len(masks):
        raise ValueError(f"{len(masks)} masks but {len(colours)} colours")
    out = image.astype(np.float32)
    for k in range(len(masks)):
        m = np.asarray(masks[k], dtype=bool)
        if m.any():
            out[m] = out[m] * (1.0 - _ALPHA) + np.asarray(colours[k], dtype=np.float32) * _ALPHA
    return out.round().clip(0, 255).astype(np.uint8)


def draw_legend(
    image: np.ndarray,
    labels: Sequence[str],
    colours: Sequence[tuple[int, int, int]],
    present: Sequence[bool] | None = None,
) -> np.ndarray:
    """Draw a small legend (a colour swatch and a label per class) in the top-left corner of ``image``.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        labels: one label per class, e.g. ``"3 scratches"``.
        colours: one RGB colour per class.
        present: per class, whether it was predicted; absent classes are drawn dimmed.

    Returns:
        A new ``(H, W, 3)`` uint8 RGB array. Images too small for the legend are returned unchanged.
    """
    from PIL import ImageDraw, ImageFont

    if len(labels) != len(colours):
        raise ValueError(f"{len(labels)} labels but {len(colours)} colours")
    font = ImageFont.load_default()
    line, pad = 12, 3
    canvas = Image.fromarray(image).convert("RGBA")
    draw = ImageDraw.Draw(canvas)
    width = max((draw.textlength(label, font=font) for label in labels), default=0) + line + 3 * pad
    height = len(labels) * line + 2 * pad
    if width > canvas.width or height > canvas.height:
        return image
    box = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    box_draw = ImageDraw.Draw(box)
    box_draw.rectangle((0, 0, int(width), height), fill=(0, 0, 0, 150))
    canvas = Image.alpha_composite(canvas, box)
    draw = ImageDraw.Draw(canvas)
    for k, (label, colour) in enumerate(zip(labels, colours, strict=True)):
        top = pad + k * line
        on = present is None or bool(present[k])
        draw.rectangle((pad, top + 2, pad + line - 4, top + line - 2), fill=tuple(colour) if on else None,
                       outline=tuple(colour), width=1)  # fmt: skip
        draw.text((pad + line, top), label, fill=(255, 255, 255) if on else (150, 150, 150), font=font)
    return np.asarray(canvas.convert("RGB"))


def write_mask_outputs(masks_dir: str | Path, image: np.ndarray, prediction: ImagePrediction) -> None:
    """Write the mask PNG and the overlay JPEG (with a class legend) of one prediction.

    Args:
        masks_dir: output folder (``masks/`` and ``overlays/`` are created inside).
        image: ``(H, W, 3)`` uint8 RGB, the image that was predicted.
        prediction: its prediction; masks ``(C, H, W)`` at the image's size.
    """
    masks = prediction.masks
    write_mask_png(mask_png_path(masks_dir, prediction.image_id), masks, prediction.class_ids, prediction.colours)
    overlay = overlay_path(masks_dir, prediction.image_id)
    overlay.parent.mkdir(parents=True, exist_ok=True)
    labels = [f"{c.class_id} {c.name}" for c in prediction.classes]
    blended = render_overlay(image, masks, prediction.colours)
    legend = draw_legend(blended, labels, prediction.colours, [c.present for c in prediction.classes])
    Image.fromarray(legend).save(overlay, format="JPEG", quality=90)
