"""torch DDP helpers for runs under ``torchrun`` (single process otherwise).

``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`init_distributed` reads them,
picks ``nccl`` on CUDA and ``gloo`` on CPU, and returns a :class:`DistContext`. Without those variables
everything runs in one process and the collectives below are no-ops.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from cascade.device import resolve_device as cascade_device

__all__ = [
    "DistContext",
    "all_gather_objects",
    "barrier",
    "broadcast_object",
    "cleanup_distributed",
    "init_distributed",
    "resolve_device",
]

logger = logging.getLogger(__name__)

_TIMEOUT = datetime.timedelta(hours=2)
"""Collective timeout: rank 0 alone runs mining, tuning and evaluation while the others wait."""


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 in a single-process run).
        local_rank: rank on this node (selects the GPU).
        world_size: number of processes.
        device: this process's device.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """True on the process that logs, writes checkpoints and runs the single-process stages."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when running under an initialised process group with more than one process."""
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """Map ``auto``/``cpu``/``cuda`` to a device (``cuda:<local_rank>`` on GPU machines).

    Raises:
        ValueError: unknown name, or ``cuda`` requested without a GPU.
    """
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={name!r} is not valid; allowed: ['auto', 'cpu', 'cuda']")
    if cascade_device(name) == "cpu":  # "auto" without CUDA; "cuda" without it raises
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def init_distributed(device: str = "auto") -> DistContext:
    """Initialise the process group from ``torchrun``'s environment, or return a single-process context.

    Args:
        device: ``auto``, ``cpu`` or ``cuda``; the backend is ``nccl`` on CUDA and ``gloo`` on CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not (dist.is_available() and dist.is_initialized()):
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend, timeout=_TIMEOUT)
        logger.info("initialised %s process group: rank %d of %d on %s", backend, rank, world_size, dev)
    return DistContext(rank=rank, local_rank=local_rank, world_size=world_size, device=dev)


def cleanup_distributed() -> None:
    """Destroy the process group if one was initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every process (no-op in a single-process run)."""
    if _active():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Gather one picklable object from every rank, in rank order (``[obj]`` in a single-process run)."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send ``obj`` from rank ``src`` to every rank; returns it on all of them."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
