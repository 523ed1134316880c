"""A stall watchdog: a run whose work makes no progress for too long fails loudly instead of hanging.

A slow run keeps finishing batches; a stuck one (a deadlocked inference thread, a decoder blocked on a
dead network share) finishes none. ``StallWatchdog`` tells them apart: the workers call ``progress()``
whenever a unit of work finishes, and the thread that waits for results does so through ``result()``,
which raises ``StalledError`` once nothing has progressed for ``timeout_s``; ``iterate`` does the same
for a blocking iterator (Ray's result stream), read in a background thread. The error names the work
still awaited (``stuck``, e.g. the images of the oldest unfinished batches) and carries the Python stack
of every thread (``thread_dump``), the first thing to look at when it fires.

Used by both folder engines (``score_folder`` and ``score_folder_ray``, ``stall_timeout_s``); nothing in
it is specific to folders, so the service can wrap its own waits the same way.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, wait
from typing import TypeVar

__all__ = ["DEFAULT_STALL_TIMEOUT_S", "StallWatchdog", "StalledError", "check_stall_timeout", "dump_threads"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_STALL_TIMEOUT_S: float = 600.0
"""Seconds without progress after which a folder run is declared stuck (a batch takes seconds, not minutes)."""

_THREAD_ADVICE = "a thread is stuck; the stacks of all threads are in the thread dump"
_MAX_NAMED = 8


class StalledError(RuntimeError):
    """Work made no progress for longer than the stall timeout: it is stuck, not slow.

    Attributes:
        what: the stalled activity, e.g. ``"folder scoring"``.
        idle_s: seconds since the last progress.
        timeout_s: the stall timeout that was exceeded.
        thread_dump: the Python stack of every thread when the stall was detected (``dump_threads``).
        stuck: what was still awaited (e.g. image ids of the oldest unfinished batches), maybe empty.
    """

    def __init__(
        self,
        what: str,
        idle_s: float,
        timeout_s: float,
        thread_dump: str,
        stuck: Sequence[str] = (),
        advice: str = _THREAD_ADVICE,
    ) -> None:
        waiting = ""
        if stuck:
            more = f" and {len(stuck) - _MAX_NAMED} more" if len(stuck) > _MAX_NAMED else ""
            waiting = f", still waiting for {', '.join(stuck[:_MAX_NAMED])}{more}"
        super().__init__(
            f"{what} made no progress for {idle_s:.0f} s (stall timeout {timeout_s:g} s){waiting}: {advice}"
        )
        self.what = what
        self.idle_s = idle_s
        self.timeout_s = timeout_s
        self.thread_dump = thread_dump
        self.stuck = tuple(stuck)


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


def check_stall_timeout(timeout_s: float | None) -> float | None:
    """``timeout_s`` as a float (None stays None: no timeout).

    Raises:
        ValueError: ``timeout_s`` is not None and not a positive number of seconds.
    """
    if timeout_s is not None and (
        isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not timeout_s > 0
    ):
        raise ValueError(f"stall timeout must be a positive number of seconds or None (off), got {timeout_s!r}")
    return None if timeout_s is None else float(timeout_s)


class StallWatchdog:
    """Declares a run stuck when ``progress()`` has not been called for ``timeout_s``.

    Args:
        timeout_s: seconds without progress allowed (> 0); None disables the watchdog.
        what: the watched activity, named in the error.
        advice: where to look when it fires, ending the error message (default: this process's thread dump).

    Raises:
        ValueError: ``timeout_s`` is not None and not a positive number.
    """

    def __init__(self, timeout_s: float | None, *, what: str = "work", advice: str = _THREAD_ADVICE) -> None:
        self.timeout_s = check_stall_timeout(timeout_s)
        self.what = what
        self.advice = advice
        self._last = time.monotonic()

    @property
    def idle_s(self) -> float:
        """Seconds since the last progress (or since creation)."""
        return time.monotonic() - self._last

    def progress(self) -> None:
        """Record progress now; safe to call from any thread (e.g. a future's done callback)."""
        self._last = time.monotonic()

    def check(self, stuck: Callable[[], Sequence[str]] = tuple) -> None:
        """Raise ``StalledError`` (after logging it) when the run has been idle for longer than ``timeout_s``.

        Args:
            stuck: called only then, for what is still awaited (named in the error).
        """
        if self.timeout_s is None:
            return
        idle = self.idle_s
        if idle >= self.timeout_s:
            error = StalledError(self.what, idle, self.timeout_s, dump_threads(), stuck(), self.advice)
            logger.error("%s", error)
            raise error

    def _remaining_s(self) -> float:
        return max(0.0, self.timeout_s - self.idle_s) if self.timeout_s is not None else 3600.0

    def result(self, future: Future[T], stuck: Callable[[], Sequence[str]] = tuple) -> T:
        """``future.result()``, raising ``StalledError`` instead of waiting past the stall timeout.

        Progress recorded meanwhile by other threads (other futures finishing) extends the wait.
        """
        while not wait([future], timeout=self._remaining_s()).done:
            self.check(stuck)
        return future.result()

    def iterate(self, items: Iterable[T], stuck: Callable[[], Sequence[str]] = tuple) -> Iterator[T]:
        """The items of a blocking iterable, each one recorded as progress; ``StalledError`` when the next one
        takes longer than the stall timeout (counted from the last progress).

        The iterable is consumed in a daemon thread (a stuck ``next`` cannot be interrupted; it is left behind);
        an exception it raises is raised here. The thread reads one item ahead at most; when the caller stops
        early, it stops too (after its next item) and closes the iterator.
        """
        ready: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=1)  # the reader runs one item ahead at most
        stop = threading.Event()

        def _hand_over(kind: str, value: object) -> bool:
            while not stop.is_set():
                try:
                    ready.put((kind, value), timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def _produce() -> None:
            iterator = iter(items)
            try:
                for item in iterator:
                    if not _hand_over("item", item):
                        break
                else:
                    _hand_over("end", None)
            except BaseException as err:  # handed over to the consumer and raised there
                _hand_over("error", err)
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()

        threading.Thread(target=_produce, name=f"{self.what} results", daemon=True).start()
        try:
            while True:
                try:
                    kind, value = ready.get(timeout=self._remaining_s())
                except queue.Empty:
                    self.check(stuck)
                    continue
                if kind == "end":
                    return
                if kind == "error":
                    raise value  # type: ignore[misc]
                self.progress()
                yield value  # type: ignore[misc]
        finally:
            stop.set()
