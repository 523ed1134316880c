"""An ensemble of networks of one architecture as a single ``nn.Module`` whose output is their average.

Used for the K fold classifiers of a run packed into one bundle: runtimes and exports see one network
with the usual logits output, so nothing downstream needs to know it is an ensemble.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["AVERAGES", "EnsembleMean"]

AVERAGES: tuple[str, ...] = ("logits", "probabilities")
"""How members are averaged: the mean logit, or the mean sigmoid probability (returned as its logit)."""

_LOGIT_LIMIT = 80.0


class EnsembleMean(nn.Module):
    """Averages the logits of ``members`` networks that share input and output shapes.

    ``average="logits"`` returns ``mean_k z_k``; ``average="probabilities"`` returns the logit of
    ``p = mean_k sigmoid(z_k)`` as ``log(p) - log(mean_k sigmoid(-z_k))`` (no ``1 - p`` cancellation, so
    ``sigmoid(output)`` is the mean probability even for saturated members), clamped to +-80, where fp32
    ``sigmoid`` is already 0 or 1. The average is taken in float32 whatever the members' compute dtype.
    Only Sigmoid, ReduceMean, Log and Clip are exported: OpenVINO's ReduceLogSumExp of a
    ``logsumexp``/``logsigmoid`` formulation was off by up to 0.19 in probability.

    Args:
        members: two or more networks mapping ``(N, 3, H, W)`` to logits of one shape (``(N, C)`` or
            ``(N, C, H, W)``).
        average: one of ``AVERAGES``.

    Raises:
        ValueError: fewer than two members, or an unknown ``average``.
    """

    def __init__(self, members: Sequence[nn.Module], average: str = "logits") -> None:
        super().__init__()
        if average not in AVERAGES:
            raise ValueError(f"average must be one of {list(AVERAGES)}, got {average!r}")
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)
        self.average = average

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> averaged logits of the members' output shape."""
        logits = torch.stack([member(x).float() for member in self.members])  # (K, N, ...)
        if self.average == "logits":
            return logits.mean(dim=0)
        p = torch.sigmoid(logits).mean(dim=0)
        q = torch.sigmoid(-logits).mean(dim=0)  # 1 - p without the cancellation when p is near 1
        return (torch.log(p) - torch.log(q)).clamp(-_LOGIT_LIMIT, _LOGIT_LIMIT)

    def extra_repr(self) -> str:
        return f"members={len(self.members)}, average={self.average!r}"
