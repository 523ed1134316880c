"""Deep supervision of the classifier by the masks, for training only.

A classifier trained from scratch on a few hundred images learns slowly from four image-level labels. With
``classifier.aux_mask_weight > 0`` a 1x1 convolution on the backbone's last feature map ``(N, C, h, w)``
predicts, per feature cell, which classes are present there; its targets are the masks max-pooled to the
cell grid. The extra loss tells the backbone *where* the defects are. The auxiliary head exists only during
training: the bundle stores the plain timm classifier.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["MaskSupervisedClassifier", "MaskSupervisedLoss", "unwrap_classifier"]


class MaskSupervisedClassifier(nn.Module):
    """A timm classifier plus a per-cell class head on its last feature map.

    Args:
        classifier: timm model (``forward_features`` -> ``(N, C, h, w)``, ``forward_head`` -> ``(N, K)``).
        num_classes: classes of the auxiliary head.

    ``forward(x)`` returns ``(logits (N, K), cell_logits (N, K, h, w))``.
    """

    def __init__(self, classifier: nn.Module, num_classes: int) -> None:
        super().__init__()
        channels = getattr(classifier, "num_features", None)
        if not isinstance(channels, int) or not hasattr(classifier, "forward_features"):
            raise ValueError(
                f"{type(classifier).__name__} has no timm forward_features/num_features; "
                "deep supervision needs a timm classifier (set classifier.aux_mask_weight: 0)"
            )
        self.classifier = classifier
        self.aux = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 3, H, W)`` -> ``(logits (N, K), cell_logits (N, K, h, w))``."""
        features = self.classifier.forward_features(x)
        return self.classifier.forward_head(features), self.aux(features)


class MaskSupervisedLoss(nn.Module):
    """``loss(logits, labels) + weight * BCE(cell_logits, cells with any mask pixel)``.

    Args:
        loss: the image-level loss.
        weight: weight of the cell term.
    """

    def __init__(self, loss: nn.Module, weight: float) -> None:
        super().__init__()
        self.loss = loss
        self.weight = float(weight)

    def forward(
        self, outputs: tuple[torch.Tensor, torch.Tensor], targets: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """Loss of ``outputs = (logits (N, K), cell_logits (N, K, h, w))`` against
        ``targets = (labels (N, K), masks (N, K, H, W))``."""
        logits, cells = outputs
        labels, masks = targets
        cell_targets = (F.adaptive_max_pool2d(masks.float(), cells.shape[-2:]) > 0).float()
        return self.loss(logits, labels) + self.weight * F.binary_cross_entropy_with_logits(cells.float(), cell_targets)


def unwrap_classifier(model: nn.Module) -> nn.Module:
    """The plain classifier inside a :class:`MaskSupervisedClassifier` (``model`` itself otherwise)."""
    return model.classifier if isinstance(model, MaskSupervisedClassifier) else model
