"""Per-batch work shared by the engines: decoding files without raising, predicting with a fallback."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cascade.imageio import ImageDecodeError, decode_image
from cascade.results import ImagePrediction
from cascade.scoring.job import BatchResult
from cascade.scoring.masks import write_mask_outputs

if TYPE_CHECKING:  # the protocol only; cascade.predictor would load the runtimes
    from cascade.predictor import Predictor

__all__ = ["Decoded", "decode_bytes", "decode_file", "predict_batch", "run_batch"]

Decoded = tuple[np.ndarray | None, str | None, float]
"""``(image (H, W, 3) uint8 or None, error reason or None, decode seconds)``."""

logger = logging.getLogger(__name__)


def decode_bytes(data: bytes, name: str) -> Decoded:
    """Decode one encoded image, never raising for bad data.

    Returns:
        ``(image (H, W, 3) uint8 or None, one-line error reason or None, seconds spent)``.
    """
    start = time.perf_counter()
    try:
        return decode_image(data, name=name), None, time.perf_counter() - start
    except ImageDecodeError as exc:
        reason = str(exc)
        prefix = f"{name}: "
        reason = reason[len(prefix) :] if reason.startswith(prefix) else reason
        return None, reason, time.perf_counter() - start


def decode_file(path: Path) -> Decoded:
    """Read and decode one image file, never raising for a bad or unreadable file (see ``decode_bytes``)."""
    start = time.perf_counter()
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"cannot read file: {exc.strerror or exc}", time.perf_counter() - start
    image, reason, _ = decode_bytes(data, path.name)
    return image, reason, time.perf_counter() - start


def predict_batch(
    predictor: Predictor, images: Sequence[np.ndarray], ids: Sequence[str], mode: str = "cascade"
) -> tuple[list[ImagePrediction], dict[str, str]]:
    """Predict a batch; when it fails, retry image by image so one bad input costs only itself.

    Returns:
        ``(predictions in input order, {image id: reason} for images whose prediction failed)``.
    """
    try:
        return predictor.predict(list(images), image_ids=list(ids), mode=mode), {}
    except (ValueError, RuntimeError) as exc:
        if len(images) == 1:
            return [], {ids[0]: " ".join(f"prediction failed: {exc}".split())}
        logger.warning("batch %s failed (%s); retrying its images one by one", list(ids), exc)
    preds: list[ImagePrediction] = []
    failed: dict[str, str] = {}
    for image, image_id in zip(images, ids, strict=True):
        one, bad = predict_batch(predictor, [image], [image_id], mode)
        preds.extend(one)
        failed.update(bad)
    return preds, failed


def run_batch(
    predictor: Predictor,
    decoded: Sequence[tuple[str, Decoded]],
    *,
    mode: str = "cascade",
    masks_dir: str | Path | None = None,
) -> BatchResult:
    """Predict one batch of decoded images; unreadable ones become errors.

    Args:
        predictor: the predictor.
        decoded: ``(image id, decode_file/decode_bytes output)`` per image, in batch order.
        mode: predictor mode.
        masks_dir: also write each prediction's mask PNG and overlay there.
    """
    result = BatchResult()
    images, ids = [], []
    for name, (image, reason, seconds) in decoded:
        result.stages["decode"] = result.stages.get("decode", 0.0) + seconds
        if image is None:
            result.errors[name] = reason or "unknown error"
        else:
            images.append(image)
            ids.append(name)
    if not images:
        return result
    preds, bad = predict_batch(predictor, images, ids, mode)
    result.errors.update(bad)
    result.add_predictions(preds)
    if masks_dir is not None:
        start = time.perf_counter()
        by_id = dict(zip(ids, images, strict=True))
        for pred in preds:
            write_mask_outputs(masks_dir, by_id[pred.image_id], pred)
        result.stages["masks"] = time.perf_counter() - start
    return result
