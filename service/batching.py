"""Cascade-aware dynamic batching: worker threads, each owning one predictor, merge concurrent requests.

Every image to predict becomes an item in one of two queues shared by the worker threads (one per
predictor: ``cascade serve --workers N``, as the folder scorer runs N single-threaded predictors side
by side). A free worker takes the oldest interactive item (HTTP requests) or, only when no interactive
item waits, the oldest background item (folder jobs), then gathers more items of the same priority and
the same ``(mode, params)`` until it has ``max_batch_size`` or ``max_wait_s`` has passed, and runs its
predictor's ``predict`` once on the merged batch. The predictor runs the classifier once on the batch and
each class's segmenter once on that class's positives across every request in it, so merging saves work
exactly where the cascade spends it; the other workers meanwhile form their own batches.

Interactive items never wait behind more than the background batches already running (at most one per
worker); background batches are never merged with interactive ones, so a job can't add its images to a
request's latency.

If a merged call raises, its items are retried one by one, so only the item that really fails gets the
exception. Futures cancelled before their batch starts (request timeouts) are skipped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from cascade.manifest import ClassParams
from cascade.results import ImagePrediction
from service.metrics import ServiceMetrics

if TYPE_CHECKING:  # the protocol only; the worker takes any object with its ``predict``
    from cascade.predictor import Predictor

__all__ = [
    "InferenceWorker",
    "Priority",
    "QueueFullError",
    "RequestTimeoutError",
    "WorkerStoppedError",
]

logger = logging.getLogger(__name__)


class Priority(enum.IntEnum):
    """Queue an item joins: interactive requests first, folder jobs when the worker is otherwise idle."""

    INTERACTIVE = 0
    BACKGROUND = 1


class QueueFullError(RuntimeError):
    """The interactive queue is full. ``retry_after`` is a suggested wait in whole seconds."""

    def __init__(self, depth: int, retry_after: int) -> None:
        super().__init__(f"inference queue is full ({depth} images waiting); retry in {retry_after} s")
        self.retry_after = retry_after


class RequestTimeoutError(TimeoutError):
    """An item did not finish before its deadline."""


class WorkerStoppedError(Exception):
    """The worker stopped (service shutting down) before the item ran; nothing was predicted.

    Deliberately not a ``RuntimeError``/``ValueError``: the folder scorer records those as failed images,
    while this one must abort the job so it resumes on the next start.
    """


@dataclass(eq=False)
class _Item:
    priority: Priority
    key: Hashable
    future: concurrent.futures.Future
    image: np.ndarray | None = None
    image_id: str = ""
    mode: str = "cascade"
    params: tuple[ClassParams, ...] | None = None
    call: Callable[[Any], Any] | None = None
    enqueued: float = field(default_factory=time.perf_counter)


class InferenceWorker:
    """The threads that own the predictors and run merged batches, one thread per predictor.

    Args:
        predictor: object with ``predict(images, image_ids, mode, params)``, or a sequence of distinct such
            objects (one worker thread each; a predictor is not thread-safe, so never pass one twice).
        max_batch_size: most images per predictor call.
        max_wait_s: longest wait for more items once the first of a batch is taken.
        queue_size: most interactive items waiting; ``submit`` raises ``QueueFullError`` beyond.
        metrics: where batch sizes, queue depth and failures are recorded (optional).
    """

    def __init__(
        self,
        predictor: Predictor | Sequence[Predictor],
        *,
        max_batch_size: int = 8,
        max_wait_s: float = 0.005,
        queue_size: int = 64,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        if max_batch_size < 1 or queue_size < 1 or max_wait_s < 0:
            raise ValueError(
                f"need max_batch_size >= 1, queue_size >= 1, max_wait_s >= 0; "
                f"got {max_batch_size}, {queue_size}, {max_wait_s}"
            )
        predictors = tuple(predictor) if isinstance(predictor, Sequence) else (predictor,)
        if not predictors or len({id(p) for p in predictors}) != len(predictors):
            raise ValueError(f"need one or more distinct predictors, got {len(predictors)} ({predictors!r:.200})")
        self.predictors: tuple[Predictor, ...] = predictors
        self.predictor = predictors[0]  # its manifest describes them all
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.queue_size = queue_size
        self.metrics = metrics
        self._queues: dict[Priority, deque[_Item]] = {p: deque() for p in Priority}
        self._cond = threading.Condition()
        self._stopping = False
        self._batch_seconds = 0.0  # moving average, for Retry-After
        self._threads = [
            threading.Thread(target=self._run, args=(p,), name=f"cascade-inference-{k}", daemon=True)
            for k, p in enumerate(predictors)
        ]

    @property
    def workers(self) -> int:
        """Number of worker threads (predictors)."""
        return len(self._threads)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the worker threads."""
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the running batches; waiting items fail with ``WorkerStoppedError``."""
        with self._cond:
            self._stopping = True
            pending = [item for q in self._queues.values() for item in q]
            for q in self._queues.values():
                q.clear()
            self._cond.notify_all()
        for item in pending:
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(WorkerStoppedError("the service is shutting down"))
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        self._update_depth()

    @property
    def alive(self) -> bool:
        """True while every worker thread runs."""
        return not self._stopping and all(thread.is_alive() for thread in self._threads)

    def depth(self, priority: Priority = Priority.INTERACTIVE) -> int:
        """Items waiting in one queue."""
        with self._cond:
            return len(self._queues[priority])

    # ------------------------------------------------------------------ submitting
    def submit(
        self,
        image: np.ndarray,
        image_id: str,
        *,
        mode: str = "cascade",
        params: Sequence[ClassParams] | None = None,
        priority: Priority = Priority.INTERACTIVE,
        block: bool = False,
        timeout: float | None = None,
    ) -> concurrent.futures.Future:
        """Queue one ``(H, W, 3)`` uint8 image; the future resolves to its ``ImagePrediction``.

        Args:
            block: when the interactive queue is full, wait for room (up to ``timeout``) instead of raising.

        Raises:
            QueueFullError: the interactive queue is full (and ``block`` is false or the wait timed out).
        """
        params_t = tuple(params) if params is not None else None
        item = _Item(priority, (mode, params_t), concurrent.futures.Future(), image, image_id, mode, params_t)
        self._enqueue(item, block=block, timeout=timeout)
        return item.future

    def submit_call(
        self, fn: Callable[[Any], Any], *, priority: Priority = Priority.INTERACTIVE
    ) -> concurrent.futures.Future:
        """Run ``fn(predictor)`` alone in a worker thread, on its predictor (e.g. ``predictor.infer`` for the GUI)."""
        item = _Item(priority, object(), concurrent.futures.Future(), call=fn)
        self._enqueue(item, block=False, timeout=None)
        return item.future

    async def predict(
        self,
        image: np.ndarray,
        image_id: str,
        *,
        timeout: float,
        mode: str = "cascade",
        params: Sequence[ClassParams] | None = None,
        block: bool = False,
    ) -> ImagePrediction:
        """Asyncio front of ``submit``: await the prediction, ``RequestTimeoutError`` after ``timeout`` s.

        Args:
            block: wait for room in a full queue (off the event loop) instead of raising ``QueueFullError``.
        """
        if block:
            future = await asyncio.to_thread(
                self.submit, image, image_id, mode=mode, params=params, block=True, timeout=timeout
            )
        else:
            future = self.submit(image, image_id, mode=mode, params=params)
        return await self.wait(future, timeout)

    @staticmethod
    async def wait(future: concurrent.futures.Future, timeout: float) -> Any:
        """Await a worker future; cancel it and raise ``RequestTimeoutError`` after ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)
        except TimeoutError as err:
            future.cancel()  # skipped by the worker if not started yet
            raise RequestTimeoutError(f"inference did not finish within {timeout:g} s") from err
        except asyncio.CancelledError:
            future.cancel()
            raise

    def retry_after(self) -> int:
        """Suggested seconds before retrying when the queue is full."""
        batches = math.ceil(self.depth() / (self.max_batch_size * self.workers)) + 1
        return int(min(60, max(1, math.ceil(batches * self._batch_seconds))))

    def _enqueue(self, item: _Item, *, block: bool, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._stopping:
                raise WorkerStoppedError("the inference worker is stopped")
            queue = self._queues[item.priority]
            while item.priority is Priority.INTERACTIVE and len(queue) >= self.queue_size:
                remaining = None if deadline is None else deadline - time.monotonic()
                if not block or (remaining is not None and remaining <= 0):
                    raise QueueFullError(len(queue), self.retry_after())
                self._cond.wait(remaining)
                if self._stopping:
                    raise WorkerStoppedError("the inference worker is stopped")
            queue.append(item)
            self._cond.notify_all()
        self._update_depth()

    # ------------------------------------------------------------------ the worker threads
    def _run(self, predictor: Predictor) -> None:
        logger.info("inference worker started (max batch %d, max wait %g s)", self.max_batch_size, self.max_wait_s)
        while True:
            batch = self._next_batch()
            if batch is None:
                break
            try:
                self._execute(batch, predictor)
            except Exception:  # never let the worker die; the items already got their exceptions
                logger.exception("inference worker: unexpected error around a batch")
        logger.info("inference worker stopped")

    def _next_batch(self) -> list[_Item] | None:
        """Block for the first item, then gather compatible ones up to the batch size or the wait limit."""
        with self._cond:
            while not self._stopping and not any(self._queues.values()):
                self._cond.wait()
            if self._stopping:
                return None
            priority = Priority.INTERACTIVE if self._queues[Priority.INTERACTIVE] else Priority.BACKGROUND
            queue = self._queues[priority]
            first = queue.popleft()
            batch = [first]
            if first.call is None:
                deadline = time.monotonic() + self.max_wait_s
                while len(batch) < self.max_batch_size:
                    self._take_compatible(queue, first.key, batch)
                    remaining = deadline - time.monotonic()
                    if len(batch) >= self.max_batch_size or remaining <= 0 or priority is Priority.BACKGROUND:
                        break
                    self._cond.wait(remaining)
                    if self._stopping:
                        break
            self._cond.notify_all()  # room in the queue for blocked submitters
        self._update_depth()
        return batch

    def _take_compatible(self, queue: deque[_Item], key: Hashable, batch: list[_Item]) -> None:
        keep: list[_Item] = []
        while queue and len(batch) < self.max_batch_size:
            item = queue.popleft()
            (batch if item.key == key and item.call is None else keep).append(item)
        queue.extendleft(reversed(keep))

    def _execute(self, batch: list[_Item], predictor: Predictor) -> None:
        live = [item for item in batch if item.future.set_running_or_notify_cancel()]
        if not live:
            return
        started = time.perf_counter()
        if self.metrics is not None:
            for item in live:
                self.metrics.queue_wait.labels(item.priority.name.lower()).observe(started - item.enqueued)
        if live[0].call is not None:
            self._run_call(live[0], predictor)
            return
        try:
            results = self._predict(predictor, live)
        except Exception as err:  # isolate the failing item(s)
            self._record_time(started)
            self._retry_singly(predictor, live, err)
            return
        elapsed = self._record_time(started)
        self._deliver(live, results)
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(live))
            self.metrics.batch_seconds.observe(elapsed)

    def _retry_singly(self, predictor: Predictor, items: list[_Item], err: Exception) -> None:
        if len(items) == 1:
            self._fail(items[0], err)
            return
        logger.warning("merged batch of %d failed (%s); retrying its images one by one", len(items), err)
        for item in items:
            try:
                self._deliver([item], self._predict(predictor, [item]))
            except Exception as single_err:  # only this item fails
                self._fail(item, single_err)

    def _record_time(self, started: float) -> float:
        elapsed = time.perf_counter() - started
        self._batch_seconds = elapsed if self._batch_seconds == 0 else 0.8 * self._batch_seconds + 0.2 * elapsed
        return elapsed

    def _predict(self, predictor: Predictor, items: list[_Item]) -> list[ImagePrediction]:
        first = items[0]
        results = predictor.predict(
            [item.image for item in items], [item.image_id for item in items], mode=first.mode, params=first.params
        )
        if len(results) != len(items):
            raise RuntimeError(f"predictor returned {len(results)} results for {len(items)} images")
        return results

    def _deliver(self, items: list[_Item], results: list[ImagePrediction]) -> None:
        for item, result in zip(items, results, strict=True):
            item.future.set_result(result)
        if self.metrics is not None:
            self.metrics.observe_predictions(results, items[0].priority.name.lower())

    def _fail(self, item: _Item, err: BaseException) -> None:
        logger.warning("prediction of %r failed: %s: %s", item.image_id, type(err).__name__, err)
        if self.metrics is not None:
            self.metrics.item_failures.labels(type(err).__name__).inc()
        item.future.set_exception(err)

    def _run_call(self, item: _Item, predictor: Predictor) -> None:
        try:
            item.future.set_result(item.call(predictor))  # type: ignore[misc]
        except Exception as err:  # reported to the caller
            self._fail(item, err)

    def _update_depth(self) -> None:
        if self.metrics is None:
            return
        with self._cond:
            depths = {p: len(q) for p, q in self._queues.items()}
        for priority, depth in depths.items():
            self.metrics.queue_depth.labels(priority.name.lower()).set(depth)
