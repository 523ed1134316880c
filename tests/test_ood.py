"""Tests for cascade/ood.py: image statistics, the reference, scores that separate shifted inputs (inverted,
blurred, other sizes, noise), references written by older versions, and the manifest / predictor / API
carrying them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cascade.manifest import BundleManifest
from cascade.ood import FEATURE_NAMES, OodReference, fit_reference, image_features


@pytest.fixture(scope="module")
def steel() -> dict[str, list[np.ndarray]]:
    """Synthetic steel: 150 reference images (seed 21) and 40 held-out ones (seed 22), grey RGB.

    150, not fewer: the spreads reach the training images' 0.2% tails, which a handful of images cannot show.
    """
    from cascade.synth.generator import generate_image

    def grey_rgb(seed: int, index: int) -> np.ndarray:
        return np.repeat(generate_image(seed, index).image[:, :, None], 3, axis=2)

    return {"train": [grey_rgb(21, i) for i in range(150)], "heldout": [grey_rgb(22, i) for i in range(40)]}


@pytest.fixture(scope="module")
def reference(steel: dict[str, list[np.ndarray]]) -> OodReference:
    return fit_reference(np.stack([image_features(image) for image in steel["train"]]))


def _blur(image: np.ndarray, k: int = 15) -> np.ndarray:
    kernel = np.ones(k) / k
    out = image.astype(np.float64)
    for axis in (0, 1):
        out = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), axis, out)
    return out.round().astype(np.uint8)


def test_features_of_grey_and_rgb_copy_agree() -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 255, (64, 100), dtype=np.uint8)
    features = image_features(grey)
    assert features.shape == (len(FEATURE_NAMES),)
    np.testing.assert_allclose(image_features(np.repeat(grey[:, :, None], 3, axis=2)), features, atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        image_features(grey.astype(np.float32))


def test_held_out_steel_is_in_distribution_and_shifted_inputs_are_not(
    steel: dict[str, list[np.ndarray]], reference: OodReference
) -> None:
    heldout = reference.score(steel["heldout"])
    assert np.mean(heldout > reference.threshold) <= 0.05
    rng = np.random.default_rng(1)
    shifted = {
        "inverted": [255 - image for image in steel["heldout"][:20]],
        "blurred": [_blur(image) for image in steel["heldout"][:10]],
        "colour noise photo": [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(5)],
        "other size (NEU-like 200x200 crop)": [image[:200, :200] for image in steel["heldout"][:10]],
    }
    for name, images in shifted.items():
        scores = reference.score(images)
        assert np.mean(scores > reference.threshold) >= 0.8, name
        assert np.median(scores) > np.median(heldout) * 1.5, name


def test_polarity_flips_sign_on_inversion_and_fine_coarse_drops_with_blur(steel: dict[str, list[np.ndarray]]) -> None:
    names = ["polarity", "fine_coarse"]
    for image in steel["heldout"][:5]:
        (polarity, fine_coarse), (inverted, _) = image_features(image, names), image_features(255 - image, names)
        assert polarity > 0.1 and inverted == pytest.approx(-polarity, abs=1e-3)  # float32 ties aside: exact
        assert image_features(_blur(image), names)[1] < fine_coarse - 1.0
    flat = np.full((64, 64), 128, np.uint8)
    assert image_features(flat, names)[0] == 0.0  # no texture: no polarity, not NaN
    assert np.isfinite(image_features(np.zeros((3, 5), np.uint8), names)).all()


def test_reference_written_before_two_sided_spreads_scores_as_before() -> None:
    """A reference of an older version (12 features, one MAD scale for both sides, no ``scale_below``) loads and
    scores with the symmetric standardised deviation it was fitted for."""
    # the neu-seg bundle's reference before the refit, rounded
    old = {
        "features": [n for n in FEATURE_NAMES if n not in ("flatness", "polarity", "fine_coarse")],
        "center": [0.429, 0.259, 0.416, 0.592, 0.0958, 0.367, 0.0215, 0.456, 0.0, 5.298, 5.298, 0.0],
        "scale": [0.140, 0.0988, 0.134, 0.262, 0.0774, 0.802, 0.0165, 0.0959, 0.002, 0.02, 0.02, 0.02],
        "threshold": 6.923,
        "images": 2000,
    }
    reference = OodReference.from_dict(old)
    assert reference.scale_below is None and reference.to_dict() == OodReference.from_dict(old).to_dict()
    assert "scale_below" not in reference.to_dict()
    image = np.random.default_rng(3).integers(60, 180, (200, 200), dtype=np.uint8)
    features = image_features(image, old["features"])
    expected = np.max(np.abs((features - np.array(old["center"])) / np.array(old["scale"])))
    assert reference.score([image])[0] == pytest.approx(expected)
    below = (0.5,) * len(old["features"])
    assert OodReference.from_dict(old | {"scale_below": list(below)}).scale_below == below


def test_reference_round_trip_and_validation(reference: OodReference) -> None:
    again = OodReference.from_dict(reference.to_dict())
    assert again == reference and again.images == 150 and again.scale_below is not None
    with pytest.raises(ValueError, match="center must be 1 finite numbers"):
        OodReference.from_dict(reference.to_dict() | {"features": ["mean"]})
    with pytest.raises(ValueError, match="features must be distinct names"):
        OodReference.from_dict(reference.to_dict() | {"features": ["nope"] * len(FEATURE_NAMES)})
    # a reference written with fewer features (an older version) keeps scoring with its own list
    old = fit_reference(np.stack([image_features(np.full((8, 8), v, np.uint8), ["mean", "std"]) for v in (9, 10, 11)]),
                        names=["mean", "std"])  # fmt: skip
    assert OodReference.from_dict(old.to_dict()).score([np.full((8, 8), 200, np.uint8)])[0] > old.threshold
    with pytest.raises(ValueError, match="unknown field"):
        OodReference.from_dict(reference.to_dict() | {"extra": 1})
    with pytest.raises(ValueError, match="threshold must be a number > 0"):
        dataclasses.replace(reference, threshold=0.0)
    with pytest.raises(ValueError, match="scale must be > 0"):
        dataclasses.replace(reference, scale=(0.0,) * len(FEATURE_NAMES))
    with pytest.raises(ValueError, match="scale_below must be 15 finite numbers"):
        dataclasses.replace(reference, scale_below=(1.0,))
    with pytest.raises(ValueError, match="scale_below must be > 0"):
        dataclasses.replace(reference, scale_below=(0.0,) * len(FEATURE_NAMES))
    with pytest.raises(ValueError, match=r"0\.5 < tail < 1"):
        fit_reference(np.zeros((3, len(FEATURE_NAMES))), tail=0.4)
    with pytest.raises(ValueError, match="N >= 2"):
        fit_reference(np.zeros((1, len(FEATURE_NAMES))))


def test_manifest_predictor_and_api_carry_the_score(reference: OodReference, confident_bundle, tiny_manifest) -> None:
    from cascade.predictor import CascadePredictor

    manifest = dataclasses.replace(tiny_manifest, ood=reference)
    assert BundleManifest.from_dict(manifest.to_dict()) == manifest
    assert "ood" not in tiny_manifest.to_dict()
    with pytest.raises(ValueError, match="manifest field 'ood'"):
        BundleManifest.from_dict(tiny_manifest.to_dict() | {"ood": {"threshold": 1.0}})
    bundle = dataclasses.replace(
        confident_bundle, manifest=dataclasses.replace(confident_bundle.manifest, ood=reference)
    )
    predictor = CascadePredictor(bundle, device="cpu", runtime="torch")
    from cascade.synth.generator import generate_image

    steel = np.repeat(generate_image(23, 0).image[:, :, None], 3, axis=2)
    results = predictor.predict([steel, steel[:200, :200]])
    assert results[0].in_distribution is True and results[1].in_distribution is False
    assert results[1].ood_score > reference.threshold >= results[0].ood_score
    body = results[1].to_dict()
    assert body["in_distribution"] is False and body["ood_score"] == pytest.approx(results[1].ood_score, abs=1e-4)
    plain = CascadePredictor(confident_bundle, device="cpu", runtime="torch").predict([steel])[0]
    assert plain.ood_score is None and "ood_score" not in plain.to_dict()
