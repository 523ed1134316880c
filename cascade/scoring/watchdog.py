"""A stall watchdog: a run whose work makes no progress for too long fails loudly instead of hanging.

A slow run keeps finishing batches; a stuck one (a deadlocked inference thread, a decoder blocked on a
dead network share) finishes none. ``StallWatchdog`` tells them apart: the workers call ``progress()``
whenever a unit of work finishes, and the thread that waits for results does so through ``result()``,
which raises ``StalledError`` once nothing has progressed for ``timeout_s``. The error carries the
Python stack of every thread (``thread_dump``), the first thing to look at when it fires.

Used by ``cascade.scoring.score_folder`` (``stall_timeout_s``); nothing in it is specific to folders,
so the service can wrap its own waits the same way.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from concurrent.futures import Future, wait
from typing import TypeVar

__all__ = ["DEFAULT_STALL_TIMEOUT_S", "StallWatchdog", "StalledError", "dump_threads"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_STALL_TIMEOUT_S: float = 600.0
"""Seconds without progress after which a folder run is declared stuck (a batch takes seconds, not minutes)."""


class StalledError(RuntimeError):
    """Work made no progress for longer than the stall timeout: it is stuck, not slow.

    Attributes:
        what: the stalled activity, e.g. ``"folder scoring"``.
        idle_s: seconds since the last progress.
        timeout_s: the stall timeout that was exceeded.
        thread_dump: the Python stack of every thread when the stall was detected (``dump_threads``).
    """

    def __init__(self, what: str, idle_s: float, timeout_s: float, thread_dump: str) -> None:
        super().__init__(
            f"{what} made no progress for {idle_s:.0f} s (stall timeout {timeout_s:g} s): "
            f"a thread is stuck; the stacks of all threads are in the thread dump"
        )
        self.what = what
        self.idle_s = idle_s
        self.timeout_s = timeout_s
        self.thread_dump = thread_dump


def dump_threads() -> str:
    """The current Python stack of every thread, most recent call last, like ``faulthandler`` but as text.

    A thread stuck inside a C extension shows the Python line that called into it.
    """
    names = {t.ident: t for t in threading.enumerate()}
    frames = sys._current_frames()
    parts = []
    for ident, frame in sorted(frames.items(), key=lambda item: item[0] != threading.main_thread().ident):
        thread = names.get(ident)
        label = f"{thread.name}{' (daemon)' if thread.daemon else ''}" if thread is not None else "unknown"
        parts.append(f"Thread {label} [0x{ident:x}], most recent call last:\n{''.join(traceback.format_stack(frame))}")
    return "\n".join(parts)


class StallWatchdog:
    """Declares a run stuck when ``progress()`` has not been called for ``timeout_s``.

    Args:
        timeout_s: seconds without progress allowed (> 0); None disables the watchdog.
        what: the watched activity, named in the error.

    Raises:
        ValueError: ``timeout_s`` is not None and not a positive number.
    """

    def __init__(self, timeout_s: float | None, *, what: str = "work") -> None:
        if timeout_s is not None and (
            isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not timeout_s > 0
        ):
            raise ValueError(f"stall timeout must be a positive number of seconds or None (off), got {timeout_s!r}")
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.what = what
        self._last = time.monotonic()

    @property
    def idle_s(self) -> float:
        """Seconds since the last progress (or since creation)."""
        return time.monotonic() - self._last

    def progress(self) -> None:
        """Record progress now; safe to call from any thread (e.g. a future's done callback)."""
        self._last = time.monotonic()

    def check(self) -> None:
        """Raise ``StalledError`` (after logging it) when the run has been idle for longer than ``timeout_s``."""
        if self.timeout_s is None:
            return
        idle = self.idle_s
        if idle >= self.timeout_s:
            error = StalledError(self.what, idle, self.timeout_s, dump_threads())
            logger.error("%s", error)
            raise error

    def result(self, future: Future[T]) -> T:
        """``future.result()``, raising ``StalledError`` instead of waiting past the stall timeout.

        Progress recorded meanwhile by other threads (other futures finishing) extends the wait.
        """
        if self.timeout_s is not None:
            while not wait([future], timeout=max(0.0, self.timeout_s - self.idle_s)).done:
                self.check()
        return future.result()
