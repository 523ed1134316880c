"""Tests for cascade/predictor.py: the gate in action, post-processing, sizes, tiling, TTA, errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cascade.bundle import LoadedBundle
from cascade.manifest import ClassParams, InputPolicy, Normalization
from cascade.predictor import CascadePredictor
from cascade.rle import decode
from cascade.runtimes.torch_runtime import TorchRuntime
from tests.fixtures.models import make_tiny_manifest
from tests.fixtures.predictor import SMALL_SHAPE, random_images

STAGES = {"preprocess", "classifier", "segmenters", "postprocess", "encode", "total"}


def _marked_images(count: int) -> list[np.ndarray]:
    """Random images whose pixel (0, 0) is ``10 * i`` so a network input tells which image it is."""
    images = random_images(count, (*SMALL_SHAPE, 3), seed=1)
    for i, image in enumerate(images):
        image[0, 0, :] = 10 * i
    return images


def _marker(x: torch.Tensor, normalization: Normalization) -> list[int]:
    value = x[:, 0, 0, 0].double() * normalization.std[0] + normalization.mean[0]
    return [round(float(v) * 255 / 10) for v in value]


def _params(predictor: CascadePredictor, **changes: object) -> tuple[ClassParams, ...]:
    return tuple(dataclasses.replace(p, **changes) for p in predictor.manifest.classes)


def test_each_segmenter_sees_exactly_the_images_its_gate_passes(
    torch_predictor: CascadePredictor, confident_bundle: LoadedBundle
) -> None:
    images = _marked_images(6)
    probs = torch_predictor.infer(images, "segment_all").probabilities
    thresholds = np.median(probs, axis=0)  # about half the images pass per class
    params = tuple(ClassParams(prob_threshold=float(t)) for t in thresholds)
    seen: dict[int, list[int]] = {cid: [] for cid in confident_bundle.segmenters}
    handles = [
        m.register_forward_hook(
            lambda _m, args, _out, cid=cid: seen[cid].extend(_marker(args[0], torch_predictor.manifest.normalization))
        )
        for cid, m in confident_bundle.segmenters.items()
    ]
    torch_predictor.stats.reset()
    try:
        results = torch_predictor.predict(images, params=params)
    finally:
        for handle in handles:
            handle.remove()
    for k, cid in enumerate(torch_predictor.manifest.class_ids):
        expected = [i for i in range(6) if probs[i, k] >= thresholds[k]]
        assert 0 < len(expected) < 6
        assert sorted(seen[cid]) == expected
        assert torch_predictor.stats.segmenter_images[cid] == len(expected)
        for i in set(range(6)) - set(expected):
            cls = results[i].classes[k]
            assert not cls.present and cls.area == 0 and cls.rle == "" and not cls.mask.any()


def test_closed_gates_run_no_segmenter_and_segment_all_runs_all(torch_predictor: CascadePredictor) -> None:
    images = random_images(3)
    torch_predictor.predict(images, params=_params(torch_predictor, prob_threshold=1.0))
    assert torch_predictor.stats.segmenter_images == dict.fromkeys((1, 2, 3, 4), 0)
    raw = torch_predictor.infer(images, "segment_all", params=_params(torch_predictor, prob_threshold=1.0))
    assert raw.segmented.all() and all(len(m) == 4 for m in raw.maps)
    assert torch_predictor.stats.segmenter_images == dict.fromkeys((1, 2, 3, 4), 3)
    assert torch_predictor.stats.images == 6 and torch_predictor.stats.calls == 2


def test_masks_and_rle_agree_at_odd_sizes(torch_predictor: CascadePredictor) -> None:
    rgb = random_images(1, (250, 1003, 3), seed=3)[0]
    gray = random_images(1, (77, 131), seed=4)[0]
    results = torch_predictor.predict([rgb, gray], image_ids=["a.jpg", "b.jpg"], mode="segment_all")
    assert [r.image_id for r in results] == ["a.jpg", "b.jpg"]
    assert sum(c.area for r in results for c in r.classes) > 0
    for result, image in zip(results, (rgb, gray), strict=True):
        assert (result.height, result.width) == image.shape[:2]
        assert result.masks.shape == (4, *image.shape[:2])
        assert set(result.timings) >= STAGES
        for cls in result.classes:
            assert cls.mask.shape == image.shape[:2] and cls.mask.dtype == bool
            np.testing.assert_array_equal(decode(cls.rle, image.shape[:2]), cls.mask)
            assert cls.area == int(cls.mask.sum()) and cls.present == (cls.area > 0)


def test_grayscale_equals_its_rgb_copy(torch_predictor: CascadePredictor) -> None:
    gray = random_images(1, SMALL_SHAPE, seed=5)[0]
    a = torch_predictor.infer([gray], "segment_all")
    b = torch_predictor.infer([np.repeat(gray[:, :, None], 3, axis=2)], "segment_all")
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    for cid in (1, 2, 3, 4):
        np.testing.assert_array_equal(a.maps[0][cid], b.maps[0][cid])


def test_batch_of_mixed_sizes_equals_one_by_one(torch_predictor: CascadePredictor) -> None:
    images = [*random_images(2, SMALL_SHAPE, seed=6), *random_images(1, (100, 200), seed=7)]
    batch = torch_predictor.infer(images, "segment_all")
    for i, image in enumerate(images):
        one = torch_predictor.infer([image], "segment_all")
        np.testing.assert_allclose(batch.probabilities[i], one.probabilities[0], atol=1e-5)
        np.testing.assert_allclose(batch.maps[i][3], one.maps[0][3], atol=1e-5)


def test_postprocess_reruns_with_other_params(torch_predictor: CascadePredictor) -> None:
    images = random_images(2, seed=8)
    raw = torch_predictor.infer(images, "segment_all")
    default = torch_predictor.postprocess(raw)
    assert [r.to_dict(include_timings=False) for r in default] == [
        r.to_dict(include_timings=False) for r in torch_predictor.predict(images, mode="segment_all")
    ]
    loose = torch_predictor.postprocess(raw, _params(torch_predictor, pixel_threshold=0.2))
    strict = torch_predictor.postprocess(raw, _params(torch_predictor, pixel_threshold=0.8))
    for lo, mid, hi in zip(loose, default, strict, strict=True):
        for a, b, c in zip(lo.classes, mid.classes, hi.classes, strict=True):
            assert a.area >= b.area >= c.area
            assert not (c.mask & ~a.mask).any()
    assert sum(c.area for r in loose for c in r.classes) > sum(c.area for r in strict for c in r.classes)
    gated = torch_predictor.postprocess(raw, _params(torch_predictor, prob_threshold=1.0), mode="cascade")
    assert not any(c.present for r in gated for c in r.classes)


def test_tta_averages_flips_and_is_flip_equivariant(confident_bundle: LoadedBundle) -> None:
    image = random_images(1, SMALL_SHAPE, seed=9)[0]
    plain = CascadePredictor(confident_bundle, device="cpu", runtime="torch", tta=())
    tta = CascadePredictor(confident_bundle, device="cpu", runtime="torch", tta=("hflip",))
    a = plain.infer([image], "segment_all")
    b = plain.infer([image[:, ::-1].copy()], "segment_all")
    t = tta.infer([image], "segment_all")
    np.testing.assert_allclose(t.probabilities, (a.probabilities + b.probabilities) / 2, atol=1e-5)
    np.testing.assert_allclose(t.maps[0][1], (a.maps[0][1] + b.maps[0][1][:, ::-1]) / 2, atol=1e-5)
    flipped = tta.infer([image[:, ::-1].copy()], "segment_all")
    np.testing.assert_allclose(flipped.maps[0][2], t.maps[0][2][:, ::-1], atol=1e-5)
    both = CascadePredictor(confident_bundle, device="cpu", runtime="torch", tta=("hflip", "vflip"))
    both.infer([image], "segment_all")
    assert both.stats.segmenter_batches == dict.fromkeys((1, 2, 3, 4), 1)


class _PixelNet(nn.Module):
    """A network without spatial context: 1x1 conv (segmenter) or 1x1 conv + global max (classifier)."""

    def __init__(self, out: int, pool: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, out, 1)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y.amax(dim=(2, 3)) if self.pool else y


def _pixel_predictor(policy: InputPolicy) -> CascadePredictor:
    torch.manual_seed(0)
    runtime = TorchRuntime(_PixelNet(4, True), {cid: _PixelNet(1, False) for cid in (1, 2, 3, 4)})
    manifest = make_tiny_manifest(input_policy=policy)
    return CascadePredictor.from_runtime(manifest, runtime)


def test_tile_mode_equals_pad_mode_without_spatial_context() -> None:
    image = random_images(1, (64, 320, 3), seed=10)[0]
    pad = _pixel_predictor(InputPolicy(mode="pad")).infer([image], "segment_all")
    tile = _pixel_predictor(InputPolicy(mode="tile", tile_width=128, tile_overlap=32)).infer([image], "segment_all")
    np.testing.assert_allclose(tile.probabilities, pad.probabilities, atol=1e-6)
    for cid in (1, 2, 3, 4):
        np.testing.assert_allclose(tile.maps[0][cid], pad.maps[0][cid], atol=1e-6)


def test_tile_and_scale_modes_return_input_size(confident_bundle: LoadedBundle) -> None:
    images = [random_images(1, (100, 700, 3), seed=11)[0], random_images(1, (64, 90), seed=12)[0]]
    policies = (
        InputPolicy(mode="tile", tile_width=256, tile_overlap=64),
        InputPolicy(scale=0.5),
        InputPolicy(scale=0.25, scale_x=0.5),
    )
    for policy in policies:
        bundle = dataclasses.replace(
            confident_bundle, manifest=dataclasses.replace(confident_bundle.manifest, input_policy=policy)
        )
        results = CascadePredictor(bundle, device="cpu", runtime="torch").predict(images, mode="segment_all")
        for result, image in zip(results, images, strict=True):
            assert result.masks.shape == (4, *image.shape[:2])
            assert all(0.0 <= c.probability <= 1.0 for c in result.classes)


def test_max_batch_chunks_runtime_calls(confident_bundle: LoadedBundle) -> None:
    predictor = CascadePredictor(confident_bundle, device="cpu", runtime="torch", max_batch=2, map_dtype=np.float16)
    raw = predictor.infer(random_images(5), "segment_all")
    assert predictor.stats.segmenter_batches == dict.fromkeys((1, 2, 3, 4), 3)
    assert raw.maps[0][1].dtype == np.float16


def test_from_bundle_path_and_embedded(tiny_bundle_path: Path, tiny_as_embedded: Path) -> None:
    predictor = CascadePredictor.from_bundle(tiny_bundle_path, device="auto", runtime="torch")
    assert predictor.runtime_name == "torch" and predictor.runtime_report is None
    assert predictor.device == ("cuda" if torch.cuda.is_available() else "cpu")
    embedded_predictor = CascadePredictor.from_bundle(runtime="torch", device="cpu", tta=("vflip",))
    assert embedded_predictor.tta == ("vflip",)
    assert len(embedded_predictor.predict(random_images(1))) == 1


def test_empty_batch(torch_predictor: CascadePredictor) -> None:
    assert torch_predictor.predict([]) == []


@pytest.mark.parametrize(
    ("images", "kwargs", "match"),
    [
        ([np.zeros((8, 8), np.float32)], {}, "float32"),
        ([np.zeros((8, 8, 4), np.uint8)], {}, r"\(8, 8, 4\)"),
        (np.zeros((8, 8, 3), np.uint8), {}, "single image"),
        ([np.zeros((8, 8), np.uint8)], {"image_ids": ["a", "b"]}, "one id per image"),
        ([np.zeros((8, 8), np.uint8)], {"mode": "all"}, "allowed modes"),
        ([np.zeros((8, 8), np.uint8)], {"params": (ClassParams(),)}, "4 ClassParams"),
    ],
)
def test_bad_input_raises_value_error(
    torch_predictor: CascadePredictor, images: object, kwargs: dict, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        torch_predictor.predict(images, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"runtime": "tensorrt"}, "unknown runtime"),
        ({"device": "tpu"}, "unknown device"),
        ({"tta": ("rot90",)}, "unknown tta"),
        ({"max_batch": 0}, "max_batch"),
        ({"map_dtype": np.int8}, "map_dtype"),
    ],
)
def test_bad_options_raise(confident_bundle: LoadedBundle, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CascadePredictor(confident_bundle, **{"device": "cpu", "runtime": "torch", **kwargs})


def test_calibrated_bundle_returns_and_gates_on_calibrated_probabilities(confident_bundle: LoadedBundle) -> None:
    from cascade.calibration import Calibration, calibrate

    plain = CascadePredictor(confident_bundle, device="cpu", runtime="torch")
    calibration = (Calibration(2.0, 0.5), Calibration(0.5, -1.0), Calibration(), Calibration(3.0, 0.0))
    manifest = dataclasses.replace(confident_bundle.manifest, calibration=calibration)
    calibrated = CascadePredictor(
        dataclasses.replace(confident_bundle, manifest=manifest), device="cpu", runtime="torch"
    )
    images = random_images(4, seed=11)
    raw_plain = plain.infer(images, "segment_all")
    raw = calibrated.infer(images, "segment_all")
    assert raw_plain.uncalibrated is None
    np.testing.assert_array_equal(raw.uncalibrated, raw_plain.probabilities)
    np.testing.assert_allclose(raw.probabilities, calibrate(raw_plain.probabilities, calibration), atol=1e-7)
    assert raw.probabilities.dtype == np.float32
    for k in range(4):  # ranking kept
        np.testing.assert_array_equal(np.argsort(raw.probabilities[:, k]), np.argsort(raw_plain.probabilities[:, k]))
    thresholds = np.median(raw.probabilities, axis=0)
    params = tuple(ClassParams(prob_threshold=float(t)) for t in thresholds)
    gated = calibrated.infer(images, "cascade", params=params)
    np.testing.assert_array_equal(gated.segmented, raw.probabilities >= thresholds[None, :])
    results = calibrated.postprocess(gated, params)
    assert [c.probability for c in results[0].classes] == pytest.approx(raw.probabilities[0].tolist())
