"""What one request may cost, checked from the image header before any pixel is decoded, and the memory budget.

Raw pixel counts alone do not bound memory: the networks see each image padded to the bundle's stride (or
cut into tiles), so a 1x400,000 image becomes 32x400,000 network pixels and a float32 map per class of that
size. ``ImageLimits`` therefore checks, from the header (``cascade.imageio.probe_image``):

- pixels <= ``max_image_pixels`` (decompression bombs);
- the aspect ratio (long side / short side) <= ``max_aspect_ratio``;
- the padded or tiled network input <= ``max_network_pixels``;
- mask / overlay PNGs only for images up to ``max_mask_pixels``;

and estimates the bytes a request will hold (decoded image, network input, activations, per-class maps and
masks, the asked-for PNGs). ``MemoryBudget`` admits requests while the sum of their estimates stays within
``memory_budget_mb``: a request that alone exceeds it gets 413, one that must wait longer than
``budget_wait_s`` for room gets 503 with ``Retry-After``. Large reservations hand freed heap memory back to
the operating system when they end (``malloc_trim``), so RSS returns to its baseline.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
import math
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from cascade.imageio import ImageHeader
from cascade.manifest import InputPolicy
from cascade.preprocess import network_pixels
from service.errors import ServiceError

__all__ = ["ImageLimits", "MemoryBudget", "Reservation"]

logger = logging.getLogger(__name__)

# Bytes per pixel, calibrated on the demo bundle (openvino-bf16, scale 0.25, 4 classes): the measured peak RSS
# growth of /predict was 786 MB for a 4000x4000 JPEG (estimate 896), 1,233 MB with masks and overlay (1,280),
# 1,357 MB for 6000x6000 (2,016).
_RAW_BYTES = 8  # the decoded image and its RGB copy
_RAW_BYTES_PER_CLASS = 12  # the float32 map at input size, the bool mask, post-processing and RLE temporaries
_NET_BYTES = 64  # float32 input (12) and the networks' activations and buffers, per network pixel
_NET_BYTES_PER_CLASS = 4  # the float32 segmenter output per class, per network pixel
_MASK_BYTES_PER_CLASS = 2  # uint8 copy and PNG encoder buffers, per class and pixel
_OVERLAY_BYTES = 16  # blended float image, uint8 overlay and PNG buffers, per pixel
_TRIM_ABOVE = 64 * 2**20  # reservations of this many bytes give freed heap back when they end


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


@dataclass(frozen=True)
class ImageLimits:
    """The per-image limits of a service, for the served bundle's input policy and class count.

    Attributes:
        max_pixels: most pixels of a decoded image.
        max_aspect_ratio: longest side over shortest side.
        max_network_pixels: most pixels of the padded or tiled network input of one image.
        max_mask_pixels: largest image for which mask / overlay PNGs are produced.
        policy: the bundle's input policy (padding or tiling).
        num_classes: the bundle's classes (a probability map and a mask each).
    """

    max_pixels: int
    max_aspect_ratio: float
    max_network_pixels: int
    max_mask_pixels: int
    policy: InputPolicy
    num_classes: int

    def check(self, header: ImageHeader, name: str, *, masks: bool = False) -> int:
        """The network pixels of an image, or a 413 ``ServiceError`` naming the limit and its option.

        Args:
            header: format and size from ``probe_image``.
            name: the image id, for the message.
            masks: mask or overlay PNGs were asked for.
        """
        width, height = header.width, header.height
        if header.pixels > self.max_pixels:
            raise ServiceError(
                413,
                f"{name}: {width}x{height} has {header.pixels} pixels, more than {self.max_pixels} "
                "(--max-image-pixels)",
            )
        ratio = max(width, height) / max(1, min(width, height))
        if ratio > self.max_aspect_ratio:
            raise ServiceError(
                413,
                f"{name}: {width}x{height} has an aspect ratio of {ratio:,.0f}:1, more than "
                f"{self.max_aspect_ratio:g}:1 (--max-aspect-ratio); padded to the networks' stride such images cost "
                "far more than their pixels",
            )
        net = network_pixels(height, width, self.policy)
        if net > self.max_network_pixels:
            raise ServiceError(
                413,
                f"{name}: {width}x{height} becomes {net} network pixels once padded/tiled, more than "
                f"{self.max_network_pixels} (--max-network-pixels)",
            )
        if masks and header.pixels > self.max_mask_pixels:
            raise ServiceError(
                413,
                f"{name}: masks and overlays are drawn for images up to {self.max_mask_pixels} pixels "
                f"(--max-mask-pixels), this one has {header.pixels}; ask without masks/overlay (the RLE is always "
                "there)",
            )
        return net

    def cost(self, header: ImageHeader, *, masks: bool = False, overlay: bool = False, encoded: int = 0) -> int:
        """Estimated peak bytes of one request: decode, inference, post-processing and the asked-for PNGs."""
        raw = header.pixels
        net = network_pixels(header.height, header.width, self.policy)
        c = self.num_classes
        total = encoded + raw * (_RAW_BYTES + _RAW_BYTES_PER_CLASS * c) + net * (_NET_BYTES + _NET_BYTES_PER_CLASS * c)
        if masks:
            total += raw * _MASK_BYTES_PER_CLASS * c
        if overlay:
            total += raw * _OVERLAY_BYTES
        return total


class MemoryBudget:
    """Bytes that requests in flight may hold together; ``reserve`` waits for room, or refuses.

    Thread-safe and not bound to an event loop (apps under test run in several), so waiting polls.

    Args:
        max_bytes: the budget.
        wait_s: longest wait for room before answering 503.
    """

    def __init__(self, max_bytes: int, wait_s: float = 10.0) -> None:
        if max_bytes < 1 or wait_s < 0:
            raise ValueError(f"need max_bytes >= 1 and wait_s >= 0, got {max_bytes} and {wait_s}")
        self.max_bytes = max_bytes
        self.wait_s = wait_s
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        """Bytes reserved right now."""
        with self._lock:
            return self._used

    def try_reserve(self, nbytes: int) -> bool:
        """Reserve ``nbytes`` if they fit now."""
        with self._lock:
            if self._used + nbytes > self.max_bytes:
                return False
            self._used += nbytes
            return True

    def release(self, nbytes: int) -> None:
        """Give back a reservation."""
        with self._lock:
            self._used = max(0, self._used - nbytes)
            idle = self._used == 0
        if nbytes >= _TRIM_ABOVE and idle:
            _trim_heap()

    async def acquire(self, nbytes: int, what: str) -> Reservation:
        """Reserve ``nbytes``, waiting up to ``wait_s`` for room; release the result when done.

        Raises:
            ServiceError: 413 when ``nbytes`` alone is more than the budget; 503 with ``Retry-After`` when no
                room came within ``wait_s``.
        """
        if nbytes > self.max_bytes:
            raise ServiceError(
                413,
                f"{what} needs about {_mib(nbytes)} of memory, more than the whole budget of {_mib(self.max_bytes)} "
                "(--memory-budget-mb); send a smaller image",
            )
        deadline = time.monotonic() + self.wait_s
        delay = 0.002
        while not self.try_reserve(nbytes):
            if time.monotonic() >= deadline:
                retry = max(1, math.ceil(self.wait_s / 2))
                raise ServiceError(
                    503,
                    f"memory budget in use ({_mib(self.used)} of {_mib(self.max_bytes)}); {what} needs "
                    f"{_mib(nbytes)}; retry in {retry} s",
                    headers={"Retry-After": str(retry)},
                )
            await asyncio.sleep(delay)
            delay = min(0.05, delay * 2)
        return Reservation(self, nbytes)

    @asynccontextmanager
    async def reserve(self, nbytes: int, what: str) -> AsyncIterator[None]:
        """``acquire`` for the ``async with`` block."""
        reservation = await self.acquire(nbytes, what)
        try:
            yield
        finally:
            reservation.release()


class Reservation:
    """Bytes held in a ``MemoryBudget``; ``release`` gives them back once, as does garbage collection of a
    reservation nobody released (a response abandoned before it started)."""

    def __init__(self, budget: MemoryBudget, nbytes: int) -> None:
        self.nbytes = nbytes
        self._release = weakref.finalize(self, budget.release, nbytes)

    def release(self) -> None:
        """Give the bytes back (later calls do nothing)."""
        self._release()


def _trim_heap() -> None:
    """Return free heap pages to the OS (glibc ``malloc_trim``; nothing elsewhere)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None
