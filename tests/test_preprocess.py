"""Tests for cascade/preprocess.py: validation, normalisation, padding, tiling, and the way back."""

from __future__ import annotations

import numpy as np
import pytest

from cascade.manifest import InputPolicy, Normalization
from cascade.preprocess import (
    as_image_list,
    check_image,
    network_pixels,
    normalize,
    padded_size,
    plan_inputs,
    tile_spans,
)

NORM = Normalization(mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5))


def _identity_maps(plan, channel: int = 0) -> dict[int, np.ndarray]:
    """Unit maps of a network that returns its input's channel ``channel``."""
    maps = {}
    for units, batch in plan.batches():
        for u, x in zip(units.tolist(), batch, strict=True):
            maps[u] = x[channel]
    return maps


def test_check_image_grayscale_becomes_rgb() -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb = check_image(gray)
    assert rgb.shape == (3, 4, 3)
    assert all(np.array_equal(rgb[:, :, c], gray) for c in range(3))


def test_check_image_rgb_is_passed_through() -> None:
    image = np.zeros((5, 6, 3), np.uint8)
    assert check_image(image) is image


@pytest.mark.parametrize(
    ("image", "words"),
    [
        (np.zeros((4, 4), np.float32), ["float32", "uint8"]),
        (np.zeros((4, 4, 4), np.uint8), ["(4, 4, 4)", "(H, W, 3)"]),
        (np.zeros((4, 4, 1), np.uint8), ["(4, 4, 1)", "(H, W)"]),
        (np.zeros((4,), np.uint8), ["(4,)"]),
        (np.zeros((0, 4), np.uint8), ["empty"]),
        ([[1, 2]], ["list", "numpy array"]),
    ],
)
def test_check_image_rejects_bad_input(image: object, words: list[str]) -> None:
    with pytest.raises(ValueError, match="image 7") as err:
        check_image(image, 7)
    for word in words:
        assert word in str(err.value)


def test_normalize_values() -> None:
    image = np.array([[[255, 0, 127]]], dtype=np.uint8)
    out = normalize(image, NORM)
    assert out.shape == (3, 1, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0], [1.0, -2.0, (127 / 255 - 0.5) / 0.5], atol=1e-6)


@pytest.mark.parametrize(("size", "stride", "expected"), [(1, 32, 32), (32, 32, 32), (33, 32, 64), (250, 32, 256)])
def test_padded_size(size: int, stride: int, expected: int) -> None:
    assert padded_size(size, stride) == expected


@pytest.mark.parametrize(
    ("width", "tile", "overlap", "expected"),
    [
        (100, 128, 32, [(0, 100)]),
        (128, 128, 32, [(0, 128)]),
        (256, 128, 0, [(0, 128), (128, 256)]),
        (300, 128, 32, [(0, 128), (96, 224), (172, 300)]),
        (1600, 512, 64, [(0, 512), (448, 960), (896, 1408), (1088, 1600)]),
    ],
)
def test_tile_spans(width: int, tile: int, overlap: int, expected: list[tuple[int, int]]) -> None:
    spans = tile_spans(width, tile, overlap)
    assert spans == expected
    covered = np.zeros(width, bool)
    for x0, x1 in spans:
        covered[x0:x1] = True
    assert covered.all()


def test_as_image_list_forms() -> None:
    assert len(as_image_list(np.zeros((3, 8, 8, 3), np.uint8))) == 3
    assert len(as_image_list(np.zeros((2, 8, 8), np.uint8))) == 2
    with pytest.raises(ValueError, match="single image"):
        as_image_list(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="sequence"):
        as_image_list("image.jpg")


def test_pad_plan_groups_by_padded_shape_and_pads_with_zeros() -> None:
    images = [
        np.full((128, 256, 3), 255, np.uint8),
        np.full((250, 1003), 255, np.uint8),
        np.zeros((120, 250, 3), np.uint8),
    ]
    plan = plan_inputs(images, InputPolicy(mode="pad", stride=32), NORM)
    assert plan.shapes == [(128, 256), (250, 1003), (120, 250)]
    assert {shape: idx.tolist() for shape, idx in plan.groups.items()} == {(128, 256): [0, 2], (256, 1024): [1]}
    batches = {tuple(b.shape[2:]): (u.tolist(), b) for u, b in plan.batches()}
    units, big = batches[(256, 1024)]
    assert units == [1]
    assert np.all(big[0, 0, :250, :1003] == 1.0) and np.all(big[0, 1, :250, :1003] == 2.0)
    assert np.all(big[0, :, 250:, :] == 0) and np.all(big[0, :, :, 1003:] == 0)
    units, small = batches[(128, 256)]
    assert units == [0, 2]
    assert np.all(small[1, :, 120:, :] == 0) and np.all(small[1, 0, :120, :250] == -1.0)


def test_batches_select_images_and_respect_max_batch() -> None:
    plan = plan_inputs([np.zeros((64, 64), np.uint8)] * 5, InputPolicy(), NORM)
    got = [units.tolist() for units, _ in plan.batches([0, 2, 3, 4], max_batch=2)]
    assert got == [[0, 2], [3, 4]]
    assert list(plan.batches([], max_batch=2)) == []


@pytest.mark.parametrize(
    "policy",
    [
        InputPolicy(mode="pad", stride=32),
        InputPolicy(mode="tile", stride=32, tile_width=128, tile_overlap=32),
        InputPolicy(mode="pad", stride=32, scale=0.5),
        InputPolicy(mode="tile", stride=16, tile_width=64, tile_overlap=16, scale=0.5),
        InputPolicy(mode="pad", stride=32, scale=0.25, scale_x=0.5),
    ],
)
def test_assemble_inverts_the_plan(policy: InputPolicy) -> None:
    """An identity network's maps come back as the (normalised) input at the input size."""
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (32, 126)), np.ones((8, 8)))
    images = [smooth[:250, :1003].astype(np.uint8), rng.integers(0, 256, (37, 90), dtype=np.uint8)]
    plan = plan_inputs(images, policy, NORM)
    maps = _identity_maps(plan)
    for i, image in enumerate(images):
        out = plan.assemble(i, maps)
        assert out.shape == image.shape and out.dtype == np.float32
        expected = (image / 255.0 - 0.5) / 0.5
        if policy.scale == 1.0:
            np.testing.assert_allclose(out, expected, atol=1e-5)
        elif i == 0:  # down and up again: a blurred copy of the smooth image
            assert np.corrcoef(out.ravel(), expected.ravel())[0, 1] > 0.9


def test_tile_plan_units_and_reduce_max() -> None:
    plan = plan_inputs(
        [np.zeros((64, 300), np.uint8), np.zeros((64, 100), np.uint8)],
        InputPolicy(mode="tile", tile_width=128, tile_overlap=32),
        NORM,
    )
    assert [(u.image, u.x0, u.x1) for u in plan.units] == [(0, 0, 128), (0, 96, 224), (0, 172, 300), (1, 0, 100)]
    values = np.array([[0.1], [0.9], [0.3], [0.2]], dtype=np.float32)
    np.testing.assert_allclose(plan.reduce_max(values), [[0.9], [0.2]])


def test_scale_resizes_network_input() -> None:
    plan = plan_inputs([np.zeros((256, 1600, 3), np.uint8)], InputPolicy(scale=0.5), NORM)
    assert plan.net_shapes == [(128, 800)]
    assert list(plan.groups) == [(128, 800)]


def test_scale_x_resizes_columns_apart_from_rows() -> None:
    """Rows by ``scale``, columns by ``scale_x``: the same network pixels as scale 0.25 for 256x1600, four times the
    columns; ``network_pixels`` counts what the plan builds."""
    policy = InputPolicy(scale=0.125, scale_x=0.5)
    assert policy.net_size(256, 1600) == (32, 800)
    plan = plan_inputs([np.zeros((256, 1600, 3), np.uint8)], policy, NORM)
    assert plan.net_shapes == [(32, 800)] and list(plan.groups) == [(32, 800)]
    assert network_pixels(256, 1600, policy) == 32 * 800 == network_pixels(256, 1600, InputPolicy(scale=0.25)) - 32 * 32
    assert InputPolicy(scale=0.5).net_size(255, 1599) == (128, 800)  # scale_x None: scale both ways
    assert InputPolicy(scale_x=0.5).net_size(10, 10) == (10, 5)


@pytest.mark.parametrize("scale_x", [0.0, -0.5, 1.5, "half"])
def test_scale_x_outside_0_1_is_rejected(scale_x: object) -> None:
    with pytest.raises((ValueError, TypeError), match="scale_x"):
        InputPolicy(scale=0.25, scale_x=scale_x)
