"""Per-shape memory of the engine runtimes: bounded, and handed back after oversized calls.

The networks take any padded input shape (dynamic H and W), and both engines keep state per shape they
have seen, never released on their own (issue 14):

- OpenVINO's CPU plugin compiles primitives for every new input shape and keeps them in an LRU cache of
  ``CPU_RUNTIME_CACHE_CAPACITY`` entries (default 5000, several per layer and shape). Fed 200 distinct
  shapes (network inputs 32x32 to 320x640), a demo-bundle runtime (fp32, one thread) grew by 2.0 GB; with
  ``RUNTIME_CACHE_ENTRIES`` = 300 by 0.75 GB. Two shapes alternating were not slower with 300 entries
  (71-75 ms/image against 94 with 5000; rough, measured on a busy machine without the CPU lock); with the
  cache off (0 entries) the growth was 0.56 GB but they took 103-108 ms: every primitive compiled again.
  What stays is mostly the heap: glibc keeps freed buffers of varying sizes (with a fixed
  ``MALLOC_MMAP_THRESHOLD_=1048576`` the growth was 0.47 GB); ``malloc_trim`` gives some back.
- Both engines size their intermediate buffers to the largest input seen (OpenVINO per infer request,
  ONNX Runtime in its arena) and keep them: four 39.7 MP images left the service 1.9 GB larger. A call
  whose input holds more than ``RELEASE_ABOVE_PIXELS`` network pixels is therefore followed by a release:
  OpenVINO replaces that network's infer request and calls ``CompiledModel.release_memory`` (a new request
  alone freed 28 of 672 MB after a 1568x1568 classifier input, both together 648), ONNX Runtime runs it
  with arena shrinkage (freed chunks go back to the system).

Bucketing input shapes to a few sizes would bound the count too, but padding further than the stride
changes what the classifier sees (its pooling covers the padding), so outputs would differ from the
folder engine's; the caps keep the outputs as they are.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RELEASE_ABOVE_PIXELS", "RUNTIME_CACHE_ENTRIES", "is_oversized"]

RUNTIME_CACHE_ENTRIES: int = 300
"""OpenVINO ``CPU_RUNTIME_CACHE_CAPACITY``: compiled primitives kept for shapes seen before (LRU)."""

RELEASE_ABOVE_PIXELS: int = 1 << 21
"""Network pixels of one call (batch x H x W; 2.1 M) above which the runtime hands its buffers back after the call.

The demo bundle's 256x1600 Severstal images are 64x416 = 27 k network pixels each (scale 0.25), a batch of 4
106 k; NEU-Seg's 200x200 are 224x224 = 50 k. Only images of many megapixels reach the limit.
"""


def is_oversized(batch: np.ndarray, limit: int | None = None) -> bool:
    """True when an ``(N, 3, H, W)`` batch holds more than ``limit`` network pixels (``N * H * W``; default
    ``RELEASE_ABOVE_PIXELS``)."""
    n, _, height, width = batch.shape
    return n * height * width > (RELEASE_ABOVE_PIXELS if limit is None else limit)
