"""Tests for models/: classifier and segmenter factories, pretrained-weight loading and offline failure."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import models.pretrained as pretrained_mod
from models import PretrainedWeightsError, create_classifier, create_segmenter, segmenter_archs

TINY_FPN = {"decoder_pyramid_channels": 16, "decoder_segmentation_channels": 32}


def _same(a: torch.nn.Module, b: torch.nn.Module, prefix: str = "") -> list[str]:
    """Names under ``prefix`` whose tensors are equal in both modules."""
    sa, sb = a.state_dict(), b.state_dict()
    return [k for k in sa if k.startswith(prefix) and k in sb and torch.equal(sa[k], sb[k])]


@pytest.mark.parametrize(("in_chans", "num_classes"), [(3, 4), (1, 2)])
def test_classifier_outputs_logits(in_chans: int, num_classes: int) -> None:
    model = create_classifier("test_efficientnet", num_classes=num_classes, in_chans=in_chans).eval()
    with torch.inference_mode():
        logits = model(torch.rand(2, in_chans, 64, 96))
    assert logits.shape == (2, num_classes)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("arch", "encoder", "kwargs"),
    [("FPN", "tu-test_efficientnet", TINY_FPN), ("unet", "tu-test_resnet", {"decoder_channels": (16, 8, 8, 8, 8)})],
)
def test_segmenter_outputs_one_channel_at_input_size(arch: str, encoder: str, kwargs: dict) -> None:
    model = create_segmenter(arch, encoder, **kwargs).eval()
    with torch.inference_mode():
        logits = model(torch.rand(2, 3, 64, 96))
    assert logits.shape == (2, 1, 64, 96)


def test_unknown_backbone_lists_close_matches() -> None:
    with pytest.raises(ValueError, match=r"unknown timm backbone 'test_resnett'.*test_resnet"):
        create_classifier("test_resnett")


def test_unknown_arch_lists_architectures() -> None:
    with pytest.raises(ValueError, match=r"unknown smp architecture 'Unett'.*'FPN'.*'Unet'"):
        create_segmenter("Unett", "resnet18")
    assert segmenter_archs()["unetplusplus"] == "UnetPlusPlus"


def test_unknown_encoder_lists_encoders_and_tu_prefix() -> None:
    with pytest.raises(ValueError, match=r"unknown smp encoder 'resnet19'.*'resnet18'.*tu-<timm model name>"):
        create_segmenter("Unet", "resnet19")
    with pytest.raises(ValueError, match=r"'tu-not_a_model'"):
        create_segmenter("Unet", "tu-not_a_model")


@pytest.mark.parametrize("bad", [3, None, ""])
def test_bad_pretrained_value(bad: object) -> None:
    with pytest.raises(ValueError, match="pretrained must be True, False, a path to a weights file or 'pkg:"):
        create_classifier("test_efficientnet", pretrained=bad)  # type: ignore[arg-type]


def test_classifier_loads_local_torch_state_dict_and_skips_head(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = create_classifier("test_efficientnet", num_classes=10)
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    torch.manual_seed(2)
    model = create_classifier("test_efficientnet", pretrained=str(path))
    head = model.pretrained_cfg["classifier"]
    backbone = [k for k in model.state_dict() if not k.startswith(f"{head}.")]
    assert set(_same(model, source)) == set(backbone)
    assert model.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 4)


def test_segmenter_loads_timm_safetensors_into_encoder(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = create_classifier("test_efficientnet")
    path = tmp_path / "timm.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    torch.manual_seed(2)
    fresh = create_segmenter("FPN", "tu-test_efficientnet", **TINY_FPN)
    model = create_segmenter("FPN", "tu-test_efficientnet", pretrained=path, **TINY_FPN)
    enc = model.encoder.state_dict()
    src = source.state_dict()
    matched = [k for k in enc if k.startswith("model.") and torch.equal(enc[k], src[k[len("model.") :]])]
    assert len(matched) > 10
    assert not _same(model, fresh, "encoder.model.conv_stem")


def test_segmenter_loads_full_smp_checkpoint_encoder(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = create_segmenter("FPN", "tu-test_efficientnet", **TINY_FPN)
    path = tmp_path / "smp.pt"
    torch.save(source.state_dict(), path)
    model = create_segmenter("Unet", "tu-test_efficientnet", pretrained=path, decoder_channels=(8, 8, 8, 8, 8))
    encoder_keys = [f"encoder.{k}" for k in model.encoder.state_dict()]
    assert set(_same(model, source, "encoder.")) == set(encoder_keys)


def test_unrelated_weights_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"foo.weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(PretrainedWeightsError, match=r"no weight in .*other\.safetensors matches"):
        create_classifier("test_efficientnet", pretrained=path)
    with pytest.raises(PretrainedWeightsError, match="not found"):
        create_segmenter("FPN", "tu-test_efficientnet", pretrained=tmp_path / "absent.safetensors", **TINY_FPN)


def test_non_state_dict_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(PretrainedWeightsError, match="does not hold a state dict"):
        create_classifier("test_efficientnet", pretrained=path)


def test_hub_weights_offline_raise_pretrained_weights_error() -> None:
    # tests/conftest.py sets HF_HUB_OFFLINE=1: nothing is cached, so the hub load must fail at once.
    with pytest.raises(PretrainedWeightsError, match=r"unreachable offline.*pretrained=False"):
        create_classifier("test_efficientnet", pretrained=True)
    with pytest.raises(PretrainedWeightsError, match="unreachable offline"):
        create_segmenter("FPN", "tu-test_efficientnet", pretrained=True, **TINY_FPN)
    with pytest.raises(PretrainedWeightsError, match="unreachable offline"):
        create_segmenter("Unet", "resnet18", pretrained=True)


def test_probe_failure_switches_hub_offline_for_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(pretrained_mod, "_probe", lambda host, port: False)
    with pytest.raises(PretrainedWeightsError, match="unreachable offline"):
        create_classifier("test_resnet", pretrained=True)
    assert constants.HF_HUB_OFFLINE is False


def test_model_without_hub_weights_is_an_error() -> None:
    with pytest.raises(PretrainedWeightsError, match="no pretrained weights for 'test_mambaout'"):
        create_classifier("test_mambaout", pretrained=True)


def test_unused_efficientnet_stages_are_dropped_without_changing_outputs() -> None:
    import segmentation_models_pytorch as smp

    from models.segmenter import _drop_unused_stages

    torch.manual_seed(0)
    kwargs = {"encoder_depth": 4, "decoder_channels": [16, 8, 8, 8]}
    full = smp.create_model("Unet", encoder_name="tu-tf_efficientnet_lite0", encoder_weights=None, classes=1, **kwargs)
    full.eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        before = full(x)
    n_before = sum(p.numel() for p in full.parameters())
    pruned = _drop_unused_stages(full)
    with torch.no_grad():
        after = pruned(x)
    assert len(pruned.encoder.model.blocks) == 5
    assert sum(p.numel() for p in pruned.parameters()) < n_before / 2
    torch.testing.assert_close(before, after)
    built = create_segmenter("Unet", "tu-tf_efficientnet_lite0", **kwargs)
    assert set(built.state_dict()) == set(pruned.state_dict())  # bundles load through create_segmenter
