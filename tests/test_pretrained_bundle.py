"""Tests for ``pretrained: bundle:<path>[#<class id>]``: networks initialised from another cascade bundle's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cascade.bundle import load_bundle
from models import PretrainedWeightsError, create_classifier, create_segmenter
from models.classifier import check_pretrained_arg
from models.pretrained import BundleNetwork
from tests.fixtures.models import TINY_CLASSIFIER, TINY_SEGMENTER


def _classifier(pretrained: str, num_classes: int = 4) -> torch.nn.Module:
    return create_classifier(TINY_CLASSIFIER.name, num_classes=num_classes, pretrained=pretrained)


def _segmenter(pretrained: str, arch: str = TINY_SEGMENTER.arch) -> torch.nn.Module:
    kwargs = TINY_SEGMENTER.kwargs if arch == TINY_SEGMENTER.arch else {}
    return create_segmenter(arch, TINY_SEGMENTER.name, pretrained=pretrained, **kwargs)


def _assert_equal_states(got: torch.nn.Module, want: torch.nn.Module, skip: tuple[str, ...] = ()) -> None:
    got_state, want_state = got.state_dict(), want.state_dict()
    assert got_state.keys() == want_state.keys()
    for key, value in want_state.items():
        if not key.startswith(skip):
            torch.testing.assert_close(got_state[key], value, msg=lambda m, k=key: f"{k}: {m}")


def test_parse_path_and_class_id() -> None:
    assert check_pretrained_arg("bundle:runs/x.cascade.safetensors") == BundleNetwork(
        Path("runs/x.cascade.safetensors")
    )
    assert check_pretrained_arg("bundle: a#b.cascade.safetensors#3 ") == BundleNetwork(
        Path("a#b.cascade.safetensors"), 3
    )
    assert str(BundleNetwork(Path("b.safetensors"), 2)) == "bundle:b.safetensors#2"


@pytest.mark.parametrize("bad", ["bundle:", "bundle:  ", "bundle:#3", "bundle:b.safetensors#x", "bundle:b#"])
def test_bad_bundle_spec_is_a_value_error(bad: str) -> None:
    with pytest.raises(ValueError, match="bundle"):
        check_pretrained_arg(bad)


@pytest.mark.parametrize("form", ["file", "directory"])
def test_classifier_starts_from_the_bundle_classifier(form: str, tiny_bundle_path: Path, tiny_bundle_dir: Path) -> None:
    path = tiny_bundle_path if form == "file" else tiny_bundle_dir
    _assert_equal_states(_classifier(f"bundle:{path}"), load_bundle(path).classifier)


def test_classifier_with_another_class_count_skips_only_the_head(tiny_bundle_path: Path) -> None:
    model = _classifier(f"bundle:{tiny_bundle_path}", num_classes=3)
    want = load_bundle(tiny_bundle_path).classifier
    _assert_equal_states(model, _classifier_like(want, 3), skip=("classifier.",))
    assert model.state_dict()["classifier.weight"].shape == (3, want.state_dict()["classifier.weight"].shape[1])


def _classifier_like(module: torch.nn.Module, num_classes: int) -> torch.nn.Module:
    """A ``num_classes`` classifier holding ``module``'s backbone weights (for comparing everything but the head)."""
    model = create_classifier(TINY_CLASSIFIER.name, num_classes=num_classes)
    model.load_state_dict(
        {k: v for k, v in module.state_dict().items() if not k.startswith("classifier.")}, strict=False
    )
    return model


def test_segmenter_starts_from_the_named_class(tiny_bundle_path: Path) -> None:
    bundle = load_bundle(tiny_bundle_path)
    model = _segmenter(f"bundle:{tiny_bundle_path}#3")
    _assert_equal_states(model, bundle.segmenters[3])
    other = bundle.segmenters[2].state_dict()
    assert any(not torch.equal(v, other[k]) for k, v in model.state_dict().items() if v.is_floating_point())


def test_segmenter_of_another_architecture_takes_the_encoder(tiny_bundle_path: Path) -> None:
    """A Unet on the same encoder gets the FPN segmenter's encoder; its decoder keeps its initial weights."""
    model = _segmenter(f"bundle:{tiny_bundle_path}#1", arch="Unet")
    encoder = load_bundle(tiny_bundle_path).segmenters[1].encoder
    _assert_equal_states(model.encoder, encoder)


def test_bundle_with_one_segmenter_needs_no_class_id(tiny_bundle_path: Path, tmp_path: Path) -> None:
    bundle = load_bundle(tiny_bundle_path)
    tensors = {f"segmenter.5.{k}": v.contiguous() for k, v in bundle.segmenters[4].state_dict().items()}
    single = tmp_path / "one.cascade.safetensors"
    save_file(tensors, str(single))
    _assert_equal_states(_segmenter(f"bundle:{single}"), bundle.segmenters[4])
    with pytest.raises(PretrainedWeightsError, match="holds no classifier"):
        _classifier(f"bundle:{single}")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("{path}", r"holds segmenters \[1, 2, 3, 4\]; name one as 'bundle:.*#<class id>'"),
        ("{path}#7", r"no segmenter 7; its segmenters are \[1, 2, 3, 4\]"),
        ("{missing}#1", "bundle not found"),
    ],
)
def test_segmenter_errors(spec: str, match: str, tiny_bundle_path: Path, tmp_path: Path) -> None:
    with pytest.raises(PretrainedWeightsError, match=match):
        _segmenter("bundle:" + spec.format(path=tiny_bundle_path, missing=tmp_path / "none.cascade.safetensors"))


def test_classifier_errors(tiny_bundle_path: Path) -> None:
    with pytest.raises(PretrainedWeightsError, match="names segmenter 3; a classifier starts from"):
        _classifier(f"bundle:{tiny_bundle_path}#3")
    with pytest.raises(PretrainedWeightsError, match=r"weights of backbone 'resnet10t' fit bundle:.*same architecture"):
        create_classifier("resnet10t", pretrained=f"bundle:{tiny_bundle_path}")


def test_segmenter_on_another_encoder_is_refused(tiny_bundle_path: Path) -> None:
    """BatchNorm counters and a few same-named decoder tensors fit any encoder: that is not a match."""
    with pytest.raises(PretrainedWeightsError, match=r"weights of encoder 'tu-resnet10t' fit bundle:.*#1"):
        create_segmenter("Unet", "tu-resnet10t", pretrained=f"bundle:{tiny_bundle_path}#1")
