"""A small thread-safe LRU cache of GUI analyses, so threshold sliders re-run only post-processing."""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

__all__ = ["Session", "SessionCache"]


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


class SessionCache:
    """Keeps the ``maxsize`` most recently used sessions, by random id.

    Args:
        maxsize: sessions kept; the least recently used one is dropped beyond it.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._items: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, session: Session) -> str:
        """Store ``session``; returns its new id."""
        key = uuid.uuid4().hex
        with self._lock:
            self._items[key] = session
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
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
