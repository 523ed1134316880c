"""A small thread-safe LRU cache of GUI analyses, so threshold sliders re-run only post-processing.

Bounded by count and by bytes: the least recently used sessions are dropped until both bounds hold. The maps
stay float32, as the predictor made them, so that the sliders give exactly what ``/predict`` would with the
same thresholds (float16 would flip pixels lying within 2**-11 of a threshold).
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

__all__ = ["Session", "SessionCache", "SessionTooLargeError"]


class SessionTooLargeError(ValueError):
    """One session alone holds more bytes than the cache may."""


@dataclass(frozen=True)
class Session:
    """One cached analysis.

    Attributes:
        image_id: the analysed image's id.
        raw: the predictor's ``RawOutput`` for that one image (probabilities and segmenter maps).
        segmented: class ids that have a probability map in ``raw``.
    """

    image_id: str
    raw: Any
    segmented: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Bytes held by the maps and probabilities."""
        maps = sum(int(m.nbytes) for per_image in getattr(self.raw, "maps", ()) for m in per_image.values())
        return maps + int(getattr(getattr(self.raw, "probabilities", None), "nbytes", 0))


class SessionCache:
    """Keeps the most recently used sessions, by random id, within a count and a byte bound.

    Args:
        maxsize: sessions kept; the least recently used ones are dropped beyond it.
        max_bytes: bytes their maps may hold together (None: no bound).
    """

    def __init__(self, maxsize: int, max_bytes: int | None = None) -> None:
        if maxsize < 1 or (max_bytes is not None and max_bytes < 1):
            raise ValueError(f"maxsize and max_bytes must be >= 1, got {maxsize} and {max_bytes}")
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, Session] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached sessions."""
        with self._lock:
            return self._bytes

    def add(self, session: Session) -> str:
        """Store ``session``; returns its new id.

        Raises:
            SessionTooLargeError: the session alone is larger than ``max_bytes``.
        """
        size = session.nbytes
        if self.max_bytes is not None and size > self.max_bytes:
            raise SessionTooLargeError(
                f"the analysis holds {size / 2**20:.0f} MiB of maps, more than the GUI cache's "
                f"{self.max_bytes / 2**20:.0f} MiB (CASCADE_GUI_CACHE_MB)"
            )
        key = uuid.uuid4().hex
        with self._lock:
            self._items[key] = session
            self._bytes += size
            while len(self._items) > self.maxsize or (self.max_bytes is not None and self._bytes > self.max_bytes):
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes
        return key

    def get(self, key: str) -> Session | None:
        """The session of ``key`` (marked recently used), or None when unknown or evicted."""
        with self._lock:
            session = self._items.get(key)
            if session is not None:
                self._items.move_to_end(key)
            return session

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
