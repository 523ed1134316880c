"""Tests for cascade/scoring/masks.py: file names, the bitmask PNG, overlays and their legend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cascade.imageio import read_image
from cascade.results import ClassPrediction, ImagePrediction
from cascade.rle import encode
from cascade.scoring.masks import (
    check_unique_stems,
    draw_legend,
    mask_png_path,
    missing_mask_outputs,
    overlay_path,
    read_mask_png,
    render_overlay,
    write_mask_outputs,
)

COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200))


def _prediction(image_id: str, masks: np.ndarray) -> ImagePrediction:
    classes = tuple(
        ClassPrediction(k + 1, name, 0.9, bool(m.any()), int(m.sum()), encode(m), m, COLOURS[k])
        for k, (name, m) in enumerate(zip(("inclusion", "patches", "scratches"), masks, strict=True))
    )
    h, w = masks.shape[1:]
    return ImagePrediction(image_id=image_id, height=h, width=w, classes=classes)


def test_paths_use_the_stem() -> None:
    assert mask_png_path("out", "0002cc93b.jpg") == Path("out/masks/0002cc93b.png")
    assert overlay_path("out", "a.b.png") == Path("out/overlays/a.b.jpg")


def test_check_unique_stems() -> None:
    check_unique_stems(["a.jpg", "b.jpg", "c.png"])
    with pytest.raises(ValueError, match=r"'a\.jpg' and 'a\.png' share the stem 'a'"):
        check_unique_stems(["a.jpg", "a.png"])


def test_write_mask_outputs_with_legend(tmp_path: Path) -> None:
    image = np.full((120, 200, 3), 90, dtype=np.uint8)
    masks = np.zeros((3, 120, 200), dtype=bool)
    masks[2, 60:100, 120:180] = True  # scratches only, away from the legend corner
    pred = _prediction("img.jpg", masks)
    assert missing_mask_outputs(tmp_path, ["img.jpg"]) == ["img.jpg"]
    write_mask_outputs(tmp_path, image, pred)
    assert missing_mask_outputs(tmp_path, ["img.jpg"]) == []
    np.testing.assert_array_equal(read_mask_png(tmp_path / "masks" / "img.png", (1, 2, 3)), masks)
    overlay = read_image(tmp_path / "overlays" / "img.jpg").astype(int)
    plain = render_overlay(image, masks, COLOURS).astype(int)
    corner = np.abs(overlay[:40, :100] - plain[:40, :100]).mean()
    assert corner > 10, "no legend drawn in the top-left corner"
    np.testing.assert_allclose(
        overlay[60:100, 130:170].mean(axis=(0, 1)), plain[60:100, 130:170].mean(axis=(0, 1)), atol=4
    )


def test_legend_shows_each_class_colour_and_dims_absent_ones() -> None:
    image = np.zeros((100, 300, 3), dtype=np.uint8)
    out = draw_legend(image, ["1 inclusion", "2 patches", "3 scratches"], COLOURS, present=[True, False, True])
    assert out.shape == image.shape and out.dtype == np.uint8
    swatch_centre = [out[3 + k * 12 + 7, 7].tolist() for k in range(3)]  # inside each filled swatch
    assert swatch_centre[0] == list(COLOURS[0]) and swatch_centre[2] == list(COLOURS[2])
    assert swatch_centre[1] != list(COLOURS[1]), "an absent class's swatch is drawn as an outline only"
    assert (out[:, 200:] == 0).all(), "the legend stays in its corner"


def test_legend_skipped_on_a_tiny_image() -> None:
    image = np.zeros((10, 10, 3), dtype=np.uint8)
    assert draw_legend(image, ["1 a"], COLOURS[:1]) is image
    with pytest.raises(ValueError, match="2 labels but 1 colours"):
        draw_legend(image, ["1 a", "2 b"], COLOURS[:1])
