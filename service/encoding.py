"""Turning predictions into response bodies: the shared JSON shape, mask PNGs, overlays and CSV rows."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from cascade.formats import Layout, format_image_rows, submission_header
from cascade.results import ImagePrediction
from cascade.scoring.masks import render_overlay

__all__ = ["csv_header", "csv_rows", "mask_png_b64", "overlay_png_b64", "prediction_body"]


def _png_b64(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=3)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def mask_png_b64(mask: np.ndarray) -> str:
    """``(H, W)`` bool mask as a base64 8-bit grayscale PNG (255 = defect)."""
    return _png_b64(np.asarray(mask, dtype=np.uint8) * np.uint8(255))


def overlay_png_b64(image: np.ndarray, prediction: ImagePrediction) -> str:
    """``(H, W, 3)`` uint8 image with the prediction's masks blended in its classes' colours (the bundle's), as PNG."""
    return _png_b64(render_overlay(image, prediction.masks, prediction.colours))


def prediction_body(
    prediction: ImagePrediction,
    *,
    image: np.ndarray | None = None,
    extra_timings: dict[str, float] | None = None,
    masks: bool = False,
    overlay: bool = False,
) -> dict:
    """The JSON body of one prediction: ``prediction.to_dict()`` plus service timings and asked-for encodings.

    Args:
        prediction: the predictor's result.
        image: ``(H, W, 3)`` uint8, needed for ``overlay``.
        extra_timings: seconds added to ``timings`` (decode, queue, request).
        masks: add ``mask_png`` (class id -> base64 PNG).
        overlay: add ``overlay_png``.
    """
    body = prediction.to_dict()
    if extra_timings:
        body["timings"].update({k: round(float(v), 6) for k, v in extra_timings.items()})
    if masks:
        body["mask_png"] = {str(c.class_id): mask_png_b64(c.mask) for c in prediction.classes}
    if overlay:
        if image is None:
            raise ValueError("overlay=True needs the image")
        body["overlay_png"] = overlay_png_b64(image, prediction)
    return body


def csv_header(layout: Layout = Layout.IMAGE_CLASS) -> str:
    """The submission header line (newline included)."""
    return submission_header(layout)


def csv_rows(prediction: ImagePrediction, layout: Layout = Layout.IMAGE_CLASS) -> str:
    """The submission lines of one prediction, one per class (Kaggle ``ImageId_ClassId`` layout by default)."""
    return format_image_rows(prediction.image_id, prediction.rles, layout, prediction.class_ids)
