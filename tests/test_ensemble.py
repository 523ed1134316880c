"""Tests for models/ensemble.py and fold-ensemble bundles (manifest, bundle, runtimes, exports, parity)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import cascade
from cascade.bundle import MANIFEST_KEY, BundleError, load_bundle, read_manifest
from cascade.manifest import ENSEMBLE_AVERAGES, BundleManifest, ModelSpec
from cascade.runtimes import available_runtimes, create_runtime
from cascade.runtimes.parity import compare, run_outputs
from models.ensemble import AVERAGES, EnsembleMean
from tests.fixtures.models import TINY_CLASSIFIER, TINY_SEGMENTER, make_tiny_bundle


class _Const(nn.Module):
    """Returns fixed logits ``(N, C)`` whatever the image."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + np.exp(-z))


@pytest.mark.parametrize(
    ("members", "average", "expected_probability"),
    [
        ([[3.0, 0.0], [-1.0, 0.0]], "logits", [_sigmoid(1.0), 0.5]),
        ([[3.0, 0.0], [-1.0, 0.0]], "probabilities", [(_sigmoid(3.0) + _sigmoid(-1.0)) / 2, 0.5]),
        ([[40.0, -40.0], [-40.0, -40.0]], "logits", [0.5, _sigmoid(-40.0)]),
        # saturated members: the mean probability survives (a naive logit(mean p) in float32 would give +-inf)
        ([[40.0, -40.0], [-40.0, -40.0]], "probabilities", [0.5, _sigmoid(-40.0)]),
        ([[60.0, 2.0], [60.0, 4.0], [-5.0, 6.0]], "probabilities", [(2 + _sigmoid(-5.0)) / 3, None]),
        ([[120.0, -120.0], [110.0, -130.0]], "probabilities", [1.0, 0.0]),  # clamped to +-80: finite logits
    ],
)
def test_ensemble_averages_logits_or_probabilities(members, average, expected_probability) -> None:
    ensemble = EnsembleMean([_Const(m) for m in members], average)
    out = ensemble(torch.zeros(2, 3, 8, 8))
    assert out.shape == (2, 2) and torch.isfinite(out).all()
    z = torch.tensor(members, dtype=torch.float64)
    reference = z.mean(0) if average == "logits" else torch.logit(torch.sigmoid(z).mean(0))
    got = torch.sigmoid(out[0].double())
    want = torch.sigmoid(reference)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    for k, p in enumerate(expected_probability):
        if p is not None:
            assert got[k].item() == pytest.approx(p, abs=1e-6)


def test_logit_and_probability_averages_differ() -> None:
    members = [_Const([3.0]), _Const([-1.0])]
    x = torch.zeros(1, 3, 4, 4)
    by_logits = torch.sigmoid(EnsembleMean(members, "logits")(x)).item()
    by_probs = torch.sigmoid(EnsembleMean(members, "probabilities")(x)).item()
    assert by_logits == pytest.approx(0.7311, abs=1e-4) and by_probs == pytest.approx(0.6108, abs=1e-4)


def test_ensemble_rejects_unknown_average_and_single_member() -> None:
    with pytest.raises(ValueError, match=r"average must be one of \['logits', 'probabilities'\], got 'median'"):
        EnsembleMean([_Const([0.0]), _Const([1.0])], "median")
    with pytest.raises(ValueError, match="at least 2 members, got 1"):
        EnsembleMean([_Const([0.0])], "logits")


def test_manifest_and_models_agree_on_the_averages() -> None:
    assert ENSEMBLE_AVERAGES == AVERAGES


# ---------------------------------------------------------------------------------------------- manifest
def test_single_network_specs_serialise_as_before() -> None:
    assert TINY_CLASSIFIER.to_dict() == {"arch": "timm", "name": "test_efficientnet", "kwargs": {}}
    assert ModelSpec("timm", "x", average="probabilities") == ModelSpec("timm", "x")  # ignored for one network


def test_ensemble_spec_round_trips() -> None:
    spec = ModelSpec("timm", "test_efficientnet", members=3, average="probabilities")
    assert spec.to_dict()["members"] == 3 and spec.to_dict()["average"] == "probabilities"
    assert ModelSpec(**spec.to_dict()) == spec


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"members": 0}, "ModelSpec.members must be an integer >= 1, got 0"),
        ({"members": 2.0}, "ModelSpec.members must be an integer >= 1"),
        ({"members": 2, "average": "mean"}, r"ModelSpec.average must be one of \['logits', 'probabilities'\]"),
    ],
)
def test_bad_ensemble_specs_raise(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        ModelSpec("timm", "x", **kwargs)


@pytest.mark.parametrize("name", ["demo", "neu-seg"])
def test_shipped_single_classifier_bundles_load_unchanged(name: str) -> None:
    path = Path(cascade.__file__).parent / "data" / f"{name}.cascade.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        stored = json.loads(handle.metadata()[MANIFEST_KEY])
    manifest = read_manifest(path)
    assert manifest.classifier.members == 1 and "members" not in stored["classifier"]
    assert manifest.to_dict()["classifier"] == stored["classifier"]  # written back exactly as read
    assert not isinstance(load_bundle(path).classifier, EnsembleMean)


# ---------------------------------------------------------------------------------------------- bundle
@pytest.fixture(scope="module", params=["logits", "probabilities"])
def ensemble_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = dataclasses.replace(TINY_CLASSIFIER, members=3, average=request.param)
    return make_tiny_bundle(tmp_path_factory.mktemp("ens") / "ens.cascade.safetensors", classifier=spec)


def test_ensemble_bundle_loads_and_averages(ensemble_path: Path) -> None:
    bundle = load_bundle(ensemble_path)
    classifier = bundle.classifier
    assert isinstance(classifier, EnsembleMean) and len(classifier.members) == 3
    assert classifier.average == bundle.manifest.classifier.average
    first = [m.state_dict()["conv_stem.weight"] for m in classifier.members]
    assert not torch.equal(first[0], first[1]), "members must hold their own (different) weights"
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        z = torch.stack([m(x) for m in classifier.members])
        got = torch.sigmoid(classifier(x))
    want = torch.sigmoid(z.mean(0)) if classifier.average == "logits" else torch.sigmoid(z).mean(0)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_ensemble_manifest_with_single_classifier_weights_is_rejected(tiny_bundle_path: Path, tmp_path: Path) -> None:
    manifest = read_manifest(tiny_bundle_path)
    ensemble = dataclasses.replace(manifest, classifier=dataclasses.replace(manifest.classifier, members=2))
    bad = tmp_path / "bad.cascade.safetensors"
    save_file(load_file(str(tiny_bundle_path)), str(bad), metadata={MANIFEST_KEY: ensemble.to_json(), "format": "pt"})
    with pytest.raises(BundleError, match=r"missing weights \['classifier.members.0"):
        load_bundle(bad)


def test_segmenter_ensembles_load_too(tmp_path: Path) -> None:
    spec = dataclasses.replace(TINY_SEGMENTER, members=2)
    path = make_tiny_bundle(tmp_path / "seg.cascade.safetensors", segmenters=dict.fromkeys((1, 2, 3, 4), spec))
    bundle = load_bundle(path)
    assert all(isinstance(m, EnsembleMean) for m in bundle.segmenters.values())
    with torch.inference_mode():
        assert bundle.segmenters[2](torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_manifest_json_round_trip_keeps_the_ensemble(ensemble_path: Path) -> None:
    manifest = read_manifest(ensemble_path)
    assert BundleManifest.from_json(manifest.to_json()) == manifest


# ---------------------------------------------------------------------------------------------- runtimes
@pytest.mark.parametrize("runtime", ["onnx", "openvino", "torch-bf16", "openvino-bf16"])
def test_ensemble_exports_and_passes_parity(ensemble_path: Path, runtime: str, tmp_path: Path) -> None:
    if runtime not in available_runtimes("cpu"):
        pytest.skip(f"runtime {runtime} unavailable here (engine not installed or no native bf16)")
    bundle = load_bundle(ensemble_path)
    reference = create_runtime("torch", bundle)
    candidate = create_runtime(runtime, bundle, cache_dir=tmp_path)
    batch = np.random.default_rng(0).standard_normal((2, 3, 64, 128)).astype(np.float32)
    ref, out = run_outputs(reference, batch), run_outputs(candidate, batch)
    parity = compare(ref, out, precision=candidate.precision, pixel_thresholds=[0.5] * 4)
    assert parity.prob_max_abs <= parity.tolerance, parity  # the ensemble: the classifier's probabilities
    if candidate.precision == "fp32":  # random-weight segmenters sit near 0.5, where bf16 flips pixels
        assert parity.passed, parity
    # the exported graph averages too: it differs from any single member's probabilities
    with torch.inference_mode():
        member = torch.sigmoid(bundle.classifier.members[0](torch.from_numpy(batch))).numpy()
    assert np.abs(out.probabilities - member).max() > 10 * parity.prob_max_abs + 1e-6
