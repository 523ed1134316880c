"""Drawing synthetic Severstal-like images with their masks, and writing a whole train set.

Each image has its own random generator ``default_rng([seed, index])``, so images can be drawn in
any order or in parallel and a dataset is byte-identical for the same seed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

from cascade.constants import IMAGE_SHAPE, NUM_CLASSES
from cascade.formats import Layout, write_submission
from cascade.processes import die_with_parent
from cascade.rle import encode_stack
from cascade.synth.background import Sheet, apply_edge_band, apply_lighting, render_background, sample_sheet
from cascade.synth.config import SynthConfig
from cascade.synth.defects import RENDERERS
from cascade.synth.distractors import add_distractors
from cascade.synth.layout import sample_combination
from cascade.synth.look import sample_look
from cascade.synth.noise import NoiseBanks, noise_banks
from cascade.synth.plate import render_plate
from cascade.synth.shapes import draw_layout, shape_table

__all__ = ["SynthDataset", "SynthImage", "encode_jpeg", "generate_dataset", "generate_image", "image_ids"]

logger = logging.getLogger(__name__)

_MIN_REGION = 100  # pixels; a class whose region ends up smaller (covered by another class) is dropped
_TRIES = 3  # layouts tried per class before giving up on it
_CLASS_ORDER = (4, 3, 1, 2)  # large regions first; small ones fit in between


@dataclass(frozen=True)
class SynthImage:
    """One generated image.

    Attributes:
        image: ``(H, W)`` uint8 gray levels.
        masks: ``(4, H, W)`` bool ground truth, index ``k`` = class ``k + 1``.
        sheet: columns ``[x0, x1)`` showing the steel sheet; the rest is the black band past its edge.
    """

    image: np.ndarray
    masks: np.ndarray
    sheet: tuple[int, int]


@dataclass(frozen=True)
class SynthDataset:
    """What ``generate_dataset`` wrote.

    Attributes:
        root: the output directory.
        images_dir: ``root/train_images``.
        annotations_path: ``root/train.csv`` (``ImageId,ClassId,EncodedPixels``, positive rows only).
        image_ids: every image file name, in generation order.
    """

    root: Path
    images_dir: Path
    annotations_path: Path
    image_ids: tuple[str, ...]


def image_ids(seed: int, n: int) -> tuple[str, ...]:
    """Kaggle-style file names (9 hex digits + ``.jpg``) for images ``0..n-1`` of a seed; all distinct."""
    ids: list[str] = []
    seen: set[str] = set()
    for index in range(n):
        salt = 0
        while True:
            digest = hashlib.blake2b(f"{seed}:{index}:{salt}".encode(), digest_size=8).hexdigest()
            name = f"{digest[:9]}.jpg"
            if name not in seen:
                break
            salt += 1
        seen.add(name)
        ids.append(name)
    return tuple(ids)


def _draw_class(
    img: np.ndarray,
    occupied: np.ndarray,
    class_id: int,
    rng: np.random.Generator,
    banks: NoiseBanks,
    sheet: Sheet,
    strength: float,
) -> np.ndarray:
    """Place a real layout of ``class_id`` on free sheet pixels, draw its look, return its ``(H, W)`` mask."""
    for _ in range(_TRIES):
        mask = draw_layout(rng, class_id, sheet.usable, sheet.has_band)
        mask &= ~occupied
        if np.count_nonzero(mask) >= _MIN_REGION:
            break
    else:
        return np.zeros_like(occupied)
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    window = (slice(int(ys[0]), int(ys[-1]) + 1), slice(int(xs[0]), int(xs[-1]) + 1))
    RENDERERS[class_id](img[window], mask[window], rng, banks, strength)
    occupied |= mask
    return mask


def generate_image(seed: int, index: int, config: SynthConfig | None = None) -> SynthImage:
    """Draw image ``index`` of the dataset with ``seed``.

    The steps: the image's look (``look.sample_look``), the sheet's edge, the surface texture, patterned
    plate, look-alikes, the defects in real polygon layouts (``shapes.draw_layout``), the camera's lighting,
    the band past the edge, blur, clipping (saturated glints) and an optional JPEG re-encoding.

    Returns:
        The ``(256, 1600)`` uint8 image, its ``(4, 256, 1600)`` bool masks and the sheet's columns.
    """
    config = config or SynthConfig()
    rng = np.random.default_rng([seed, index])
    banks = noise_banks()
    height, width = IMAGE_SHAPE
    look = sample_look(rng, config)
    sheet = sample_sheet(rng, width, config.edge_band_prob)
    img = render_background(rng, banks, IMAGE_SHAPE, look)
    if look.plate:
        render_plate(img, rng, look.plate)
    if config.distractors:
        add_distractors(img, rng, banks, (sheet.x0, sheet.x1), look)
    masks = np.zeros((NUM_CLASSES, height, width), dtype=bool)
    occupied = np.zeros((height, width), dtype=bool)
    present = sample_combination(rng, config.combination_weights)
    for class_id in (c for c in _CLASS_ORDER if c in present):
        masks[class_id - 1] = _draw_class(img, occupied, class_id, rng, banks, sheet, look.defect_contrast)
    apply_lighting(img, rng, look)
    apply_edge_band(img, sheet, rng, banks)
    if look.blur > 0:
        cv2.GaussianBlur(img, (0, 0), look.blur, dst=img)
    np.clip(img, 0.0, 255.0, out=img)
    image = (img + 0.5).astype(np.uint8)
    if look.reencode:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, look.reencode])
        if ok:
            image = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return SynthImage(image=image, masks=masks, sheet=(sheet.x0, sheet.x1))


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """Encode a ``(H, W)`` uint8 gray image as a 3-channel JPEG, as the real images are stored."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode a JPEG of shape {image.shape}")
    return buf.tobytes()


def _write_one(task: tuple[int, int, str, Path, SynthConfig]) -> tuple[str, list[str]]:
    seed, index, name, images_dir, config = task
    synth = generate_image(seed, index, config)
    (images_dir / name).write_bytes(encode_jpeg(synth.image, config.jpeg_quality))
    return name, encode_stack(synth.masks)


def _init_worker(parent: int) -> None:
    die_with_parent(parent)  # a killed `cascade synth --workers N` left these processes asleep
    cv2.setNumThreads(1)
    noise_banks()
    shape_table()


def _results(tasks: list[tuple[int, int, str, Path, SynthConfig]], workers: int) -> Iterator[tuple[str, list[str]]]:
    if workers <= 1:
        yield from map(_write_one, tasks)
        return
    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(os.getpid(),)
    ) as pool:
        yield from pool.map(_write_one, tasks, chunksize=max(1, min(16, len(tasks) // (4 * workers))))


def generate_dataset(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    *,
    config: SynthConfig | None = None,
    workers: int = 1,
    progress: bool = False,
    overwrite: bool = False,
) -> SynthDataset:
    """Write ``n`` synthetic images to ``out_dir/train_images`` and their masks to ``out_dir/train.csv``.

    Args:
        out_dir: output directory (created; existing files of the same names are overwritten).
        n: number of images (>= 1).
        seed: dataset seed; the same seed gives byte-identical files.
        config: generator settings (default: the ``real`` profile).
        workers: processes drawing images in parallel (1 = in this process).
        progress: show a tqdm progress bar.
        overwrite: delete ``.jpg`` files in ``train_images`` that are not part of this set; without it,
            such files raise ``FileExistsError`` (they would count as clean images of the set).

    Returns:
        Paths and image ids of the written set.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    config = config or SynthConfig()
    root = Path(out_dir)
    images_dir = root / "train_images"
    images_dir.mkdir(parents=True, exist_ok=True)
    names = image_ids(seed, n)
    stray = sorted(set(p.name for p in images_dir.glob("*.jpg")) - set(names))
    if stray and not overwrite:
        raise FileExistsError(
            f"{images_dir} holds {len(stray)} images of another set (e.g. {stray[0]}); "
            "use an empty directory or overwrite=True (--overwrite) to delete them"
        )
    for name in stray:
        (images_dir / name).unlink()
    tasks = [(seed, i, name, images_dir, config) for i, name in enumerate(names)]
    results = _results(tasks, workers)
    if progress:
        from tqdm import tqdm

        results = tqdm(results, total=n, desc="synth", unit="img")
    rows = sorted(results)
    annotations_path = root / "train.csv"
    write_submission(annotations_path, rows, layout=Layout.LONG)
    logger.info("wrote %d synthetic images to %s", n, images_dir)
    return SynthDataset(root=root, images_dir=images_dir, annotations_path=annotations_path, image_ids=names)
