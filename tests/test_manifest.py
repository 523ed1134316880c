"""Tests for cascade/manifest.py."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest

from cascade.constants import CLASS_IDS
from cascade.manifest import (
    FORMAT_VERSION,
    BundleManifest,
    ClassParams,
    InputPolicy,
    ModelSpec,
    Normalization,
)

SEG = ModelSpec("Unet", "tu-test_resnet", {"decoder_channels": (16, 8)})


def _manifest(**overrides: Any) -> BundleManifest:
    fields: dict[str, Any] = {
        "classifier": ModelSpec("timm", "test_resnet"),
        "segmenters": dict.fromkeys(CLASS_IDS, SEG),
    }
    return BundleManifest(**(fields | overrides))


def test_defaults_and_json_round_trip() -> None:
    manifest = _manifest(
        input_policy=InputPolicy(mode="tile", tile_width=512, tile_overlap=64, scale=0.5),
        classes=[ClassParams(prob_threshold=0.1 * k, min_area=k * 100, soft_gate=k == 2) for k in range(4)],
        tta=["hflip"],
        provenance={"dataset": {"name": "synth", "n": 8}, "metrics": {"dice": np.float32(0.5)}, "created": "2025"},
    )
    assert manifest.format_version == FORMAT_VERSION
    assert manifest.classes[2].soft_gate is True
    assert manifest.tta == ("hflip",)
    assert manifest.segmenters[1].kwargs == {"decoder_channels": [16, 8]}
    text = json.dumps(manifest.to_dict())
    again = BundleManifest.from_dict(json.loads(text))
    assert again == manifest
    assert BundleManifest.from_json(manifest.to_json()) == manifest
    assert list(again.segmenters) == list(CLASS_IDS)
    anisotropic = _manifest(input_policy=InputPolicy(scale=0.125, scale_x=0.5))
    assert BundleManifest.from_json(anisotropic.to_json()).input_policy.scale_x == 0.5


def test_replace_and_class_params() -> None:
    manifest = _manifest()
    changed = manifest.with_class_params(3, prob_threshold=0.8, min_area=50)
    assert changed.class_params(3) == ClassParams(prob_threshold=0.8, min_area=50)
    assert changed.class_params(1) == manifest.class_params(1)
    assert manifest.class_params(3).prob_threshold == 0.5
    tuned = manifest.with_classes([ClassParams(pixel_threshold=0.3)] * 4)
    assert {c.pixel_threshold for c in tuned.classes} == {0.3}
    assert dataclasses.replace(manifest, tta=("vflip", "hflip")).tta == ("vflip", "hflip")
    with pytest.raises(ValueError, match=r"unknown class id 5; valid ids are \[1, 2, 3, 4\]"):
        manifest.class_params(5)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: ClassParams(prob_threshold=1.5), r"ClassParams.prob_threshold must be in \[0.0, 1.0\], got 1.5"),
        (lambda: ClassParams(pixel_threshold=-0.1), r"pixel_threshold must be in \[0.0, 1.0\]"),
        (lambda: ClassParams(min_area=-1), "min_area must be an integer >= 0"),
        (lambda: ClassParams(min_component_area=2.5), "min_component_area must be an integer >= 0"),
        (lambda: ClassParams(soft_gate="yes"), "soft_gate must be true or false"),
        (lambda: InputPolicy(mode="crop"), r"mode must be one of \['pad', 'tile'\], got 'crop'"),
        (lambda: InputPolicy(mode="tile"), "tile_width is required when mode is 'tile'"),
        (lambda: InputPolicy(mode="tile", tile_width=100), "multiple of stride 32"),
        (lambda: InputPolicy(mode="tile", tile_width=64, tile_overlap=64), r"tile_overlap must be in \[0, tile_width"),
        (lambda: InputPolicy(scale=0.0), r"scale must be in \(0.0, 1.0\]"),
        (lambda: InputPolicy(scale_x=1.5), r"scale_x must be in \(0.0, 1.0\]"),
        (lambda: InputPolicy(stride=0), "stride must be an integer >= 1"),
        (lambda: Normalization(std=(1.0, 0.0, 1.0)), r"Normalization.std\[1\] must be in \(0.0"),
        (lambda: Normalization(mean=(0.5, 0.5)), r"mean must be 3 numbers"),
        (lambda: ModelSpec("", "x"), "ModelSpec.arch must be a non-empty string"),
        (lambda: ModelSpec("timm", "x", {"f": object()}), "ModelSpec.kwargs must be JSON-serializable"),
        (lambda: _manifest(tta=("rot90",)), r"tta must be distinct values from \['hflip', 'vflip'\]"),
        (lambda: _manifest(tta=("hflip", "hflip")), "tta must be distinct"),
        (lambda: _manifest(classes=(ClassParams(),) * 3), "classes must be 4 ClassParams"),
        (lambda: _manifest(segmenters={1: SEG}), r"one spec per class id \[1, 2, 3, 4\], got keys \[1\]"),
        (lambda: _manifest(classifier=ModelSpec("Unet", "resnet18")), r"classifier.arch must be one of \['timm'\]"),
        (lambda: _manifest(class_ids=(1, 2, 3)), r"one non-empty name per class id \[1, 2, 3\]"),
        (lambda: _manifest(class_names=("a", "b", "c", "")), "one non-empty name per class id"),
        (lambda: _manifest(class_ids=(1, 1, 2, 3)), "distinct, ascending and within 1..8"),
        (lambda: _manifest(format_version=FORMAT_VERSION + 1), "newer than the supported version"),
        (lambda: _manifest(format_version=0), "format_version must be an integer >= 1"),
    ],
)
def test_validation_names_field_and_allowed_values(factory: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        factory()


def _broken(edit: Any) -> dict[str, Any]:
    data = _manifest().to_dict()
    edit(data)
    return data


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("classifier"), r"manifest is missing field\(s\) \['classifier'\]"),
        (lambda d: d.pop("format_version"), r"missing field\(s\) \['format_version'\]"),
        (lambda d: d["segmenters"]["3"].pop("name"), r"'segmenters.3' is missing field\(s\) \['name'\]"),
        (lambda d: d["classes"][1].update(min_area=-5), r"'classes\[1\]': ClassParams.min_area must be"),
        (lambda d: d["classes"][2].update(prob_thresh=0.1), r"'classes\[2\]' has unknown field\(s\) \['prob_thresh'\]"),
        (lambda d: d.update(extra=1), r"unknown field\(s\) \['extra'\]; allowed fields are \['format_version'"),
        (lambda d: d.update(format_version=99), "format_version 99 is newer than the supported version 1"),
        (lambda d: d["segmenters"].update(x=d["segmenters"]["1"]), "non-integer class id key 'x'"),
        (lambda d: d.update(input_policy="pad"), "'input_policy' must be an object"),
        (lambda d: d.update(classes={}), "'classes' must be a list"),
    ],
)
def test_from_dict_names_missing_or_bad_field(edit: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BundleManifest.from_dict(_broken(edit))


def test_from_json_rejects_bad_json() -> None:
    with pytest.raises(ValueError, match="manifest is not valid JSON"):
        BundleManifest.from_json("{not json")
    with pytest.raises(ValueError, match="manifest must be a JSON object, got list"):
        BundleManifest.from_json("[]")


def _gate_curve(n: int = 4) -> Any:
    from cascade.gate_curve import ClassGateCurve, GateCurve, GatePoint

    curve = ClassGateCurve(
        prob_thresholds=(0.0, 0.5), dice=(0.6, 0.7), pass_rate=(1.0, 0.25), recall=(1.0, 0.9),
        pixel_thresholds=(0.5, 0.5), min_areas=(0, 100), positives=10, positive_dice=0.6,
    )  # fmt: skip
    points = (GatePoint(0.25 * n, 0.7, (0.5,) * n), GatePoint(1.0 * n, 0.72, (0.0,) * n))
    return GateCurve(images=40, classes=(curve,) * n, frontier=points, chosen=points[0], dice_only=points[1])


def test_calibration_gate_curve_and_predictable_round_trip() -> None:
    from cascade.calibration import Calibration

    manifest = _manifest(
        classes=[ClassParams(predictable=k != 1) for k in range(4)],
        calibration=[Calibration(1.0 + k, -0.1 * k) for k in range(4)],
        gate_curve=_gate_curve(),
    )
    data = json.loads(manifest.to_json())
    assert data["calibration"][1] == {"temperature": 2.0, "bias": -0.1}
    assert data["gate_curve"]["chosen"]["runs_per_image"] == 1.0
    assert [c["predictable"] for c in data["classes"]] == [True, False, True, True]
    again = BundleManifest.from_dict(data)
    assert again == manifest
    assert again.gate_curve.classes[2].pass_rate == (1.0, 0.25)


def test_manifests_without_the_gate_fields_still_load() -> None:
    old = _manifest().to_dict()
    for entry in old["classes"]:
        del entry["predictable"]  # written before the flag existed
    assert "calibration" not in old and "gate_curve" not in old
    manifest = BundleManifest.from_dict(old)
    assert manifest.calibration == () and manifest.gate_curve is None
    assert all(c.predictable for c in manifest.classes)
    assert BundleManifest.from_dict(old | {"gate_curve": None}).gate_curve is None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"calibration": [{"temperature": 1.0, "bias": 0.0}]}, "calibration must be empty or 4 Calibrations"),
        ({"calibration": [{"temperature": 0.0}] * 4}, r"calibration\[0\].*temperature must be > 0"),
        ({"calibration": {"temperature": 1.0}}, "'calibration' must be a list"),
        ({"gate_curve": {"images": 3}}, "'gate_curve'"),
        ({"classes": [{"predictable": "yes"}] * 4}, "predictable must be true or false"),
    ],
)
def test_gate_fields_are_validated(edit: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BundleManifest.from_dict(_manifest().to_dict() | edit)


def test_gate_curve_must_match_the_classes() -> None:
    with pytest.raises(ValueError, match="one curve per class id"):
        _manifest(gate_curve=_gate_curve(3))
