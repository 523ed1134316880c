"""Torch eager runtimes: fp32 (``"torch"``, the reference) and reduced precision autocast.

``"torch-bf16"`` runs bf16 autocast with channels_last memory format (on CPUs with native bf16, see
``cpu_supports_bf16``, or on CUDA); ``"torch-fp16"`` runs fp16 autocast with channels_last on CUDA.
The fp32 runtime uses the given modules as they are (switched to eval mode for each call and back,
so a training loop can evaluate its live models); reduced-precision runtimes work on private copies
so converting to channels_last never touches the caller's modules.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch import nn

from cascade.runtimes.base import Runtime, cpu_supports_bf16, resolve_threads

__all__ = ["TorchRuntime"]

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the duration of a call; the previous train/eval state is restored after."""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        yield model
    finally:
        if was_training:
            model.train()


class TorchRuntime(Runtime):
    """Torch eager inference of a classifier and per-class segmenters.

    Args:
        classifier: module mapping ``(N, 3, H, W)`` to logits ``(N, 4)``.
        segmenters: class id -> module mapping ``(N, 3, H, W)`` to logits ``(N, 1, H, W)``.
        device: ``"cpu"`` or a CUDA device.
        precision: ``"fp32"``, ``"bf16"`` (CPU with native bf16, or CUDA) or ``"fp16"`` (CUDA only).
        threads: sets ``torch.set_num_threads`` (process-wide) when given.
    """

    def __init__(
        self,
        classifier: nn.Module,
        segmenters: Mapping[int, nn.Module],
        *,
        device: str = "cpu",
        precision: str = "fp32",
        threads: int | None = None,
    ) -> None:
        if precision not in _DTYPES:
            raise ValueError(f"unknown precision {precision!r}; allowed: {list(_DTYPES)}")
        on_cuda = device.startswith("cuda")
        if precision == "fp16" and not on_cuda:
            raise ValueError("precision 'fp16' needs a CUDA device; on CPU use 'bf16' or 'fp32'")
        if precision == "bf16" and not on_cuda and not cpu_supports_bf16():
            raise ValueError("precision 'bf16' needs a CPU with native bf16 (avx512_bf16 or amx_bf16) or CUDA")
        if threads is not None:
            torch.set_num_threads(resolve_threads(threads))
        self.name = "torch" if precision == "fp32" else f"torch-{precision}"
        self.device = device
        self.precision = precision
        self.threads = resolve_threads(None)
        self.class_ids = tuple(segmenters)
        self._dtype = _DTYPES[precision]
        self._channels_last = precision != "fp32"
        self._classifier = self._prepare(classifier)
        self._segmenters = {cid: self._prepare(m) for cid, m in segmenters.items()}

    @property
    def classifier(self) -> nn.Module:
        """The classifier module this runtime calls."""
        return self._classifier

    @property
    def segmenters(self) -> dict[int, nn.Module]:
        """The segmenter modules this runtime calls, by class id."""
        return dict(self._segmenters)

    def _prepare(self, model: nn.Module) -> nn.Module:
        if self._channels_last:
            model = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
        return model.to(self.device)

    def _run(self, model: nn.Module, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device, non_blocking=True)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        autocast = (
            torch.autocast(device_type=device_type, dtype=self._dtype)
            if self._dtype is not None
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), _eval_mode(model), autocast:
            logits = model(x)
        return torch.sigmoid(logits.float()).cpu().numpy()

    def classify(self, batch: np.ndarray) -> np.ndarray:
        """``(N, 3, H, W)`` -> ``(N, 4)`` probabilities."""
        return self._run(self._classifier, batch)

    def segment(self, class_id: int, batch: np.ndarray) -> np.ndarray:
        """``(N, 3, H, W)`` -> ``(N, H, W)`` probabilities of ``class_id``'s segmenter."""
        self._check_class(class_id)
        return self._run(self._segmenters[class_id], batch)[:, 0]
