"""The local engine: score a folder on this machine, decoding ahead in threads, one or more predictors.

A thread pool decodes the next batches (in listing order) while the predictors run; Pillow and torch
release the GIL, so decoding hides behind inference. With several predictors (each its own copy of the
networks, e.g. two single-threaded ones on two cores) batches run side by side, one thread per
predictor: small networks use cores better that way than through intra-op threads. Results are
committed in listing order (errors file, then submission, fsync'ed) as batches finish, so an
interrupted run resumes, and the output is the same whatever the number of predictors.

A run whose batches stop finishing (a deadlocked predictor thread) does not hang: after
``ScoreOptions.stall_timeout_s`` without a finished batch it raises ``StalledError`` naming the images of the
batches still running, with every thread's stack (``cascade.scoring.watchdog``); what was committed stays
resumable.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from cascade.constants import CLASS_IDS
from cascade.scoring.batch import Decoded, decode_file, run_batch
from cascade.scoring.job import BatchResult, JobTally, plan_job
from cascade.scoring.options import ScoreOptions
from cascade.scoring.summary import ScoreProgress, ScoreSummary
from cascade.scoring.watchdog import StallWatchdog

if TYPE_CHECKING:  # the protocol only; cascade.predictor would load the runtimes
    from cascade.predictor import Predictor

__all__ = ["score_folder"]

logger = logging.getLogger(__name__)

_DecodingBatch = list[tuple[str, "Future[Decoded]"]]


def score_folder(
    images_dir: str | Path,
    out_csv: str | Path,
    predictor: Predictor | Sequence[Predictor],
    *,
    options: ScoreOptions = ScoreOptions(),
    workers: int = 2,
    prefetch_batches: int = 2,
    cancel: threading.Event | None = None,
    progress: Callable[[ScoreProgress], None] | None = None,
) -> ScoreSummary:
    """Score every image of a folder into a submission CSV, resuming an interrupted run.

    Args:
        images_dir: folder of images (see ``list_images``); scored in file-name order.
        out_csv: submission to write (4 rows per image, listing order); ``<stem>.errors.csv`` next to it lists
            unreadable images.
        predictor: a ``CascadePredictor`` (or anything with its ``predict``), or several (not thread-safe
            ones must be distinct objects): batches then run side by side, one thread per predictor.
        options: batch size, layout, mode, masks, resume, fsync and stall timeout (``ScoreOptions``).
        workers: decoding threads.
        prefetch_batches: batches decoded ahead of those being predicted.
        cancel: when set, stop after the batches being predicted (the output stays resumable).
        progress: called once at the start (``done`` = images resumed) and after every committed batch.

    Returns:
        The run's summary.

    Raises:
        ResumeError: ``options.resume`` is True and the existing output belongs to another job.
        NotADirectoryError: ``images_dir`` is not a folder.
        StalledError: no batch finished for ``options.stall_timeout_s`` (its ``thread_dump`` shows where each
            thread is); the stuck predictor threads are left behind, the output stays resumable.
    """
    watchdog = StallWatchdog(options.stall_timeout_s, what="folder scoring")
    predictors = list(predictor) if isinstance(predictor, Sequence) else [predictor]
    if not predictors or workers < 1 or prefetch_batches < 0:
        raise ValueError(
            f"{len(predictors)} predictors, workers={workers}, prefetch_batches={prefetch_batches}; "
            "allowed: at least one predictor, workers >= 1, prefetch_batches >= 0"
        )
    manifest = getattr(predictors[0], "manifest", None)  # the bundle's classes decide the rows per image
    class_ids = tuple(manifest.class_ids) if manifest is not None else CLASS_IDS
    job = plan_job(images_dir, out_csv, options, class_ids)
    if job.resumed:
        logger.info("%s: resuming, %d of %d images already finished", job.out_csv, job.resumed, len(job.image_ids))
    tally = JobTally(job, "local")
    free: queue.SimpleQueue[Predictor] = queue.SimpleQueue()
    for p in predictors:
        free.put(p)

    def _infer(batch: _DecodingBatch) -> BatchResult:
        start = time.perf_counter()
        decoded = [(name, future.result()) for name, future in batch]
        waited = time.perf_counter() - start
        model = free.get()
        try:
            result = run_batch(model, decoded, mode=options.mode, masks_dir=options.masks_dir)
        finally:
            free.put(model)
        result.stages["decode_wait"] = waited
        return result

    decode_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
    infer_pool = ThreadPoolExecutor(max_workers=len(predictors), thread_name_prefix="predict")
    upcoming = iter(job.batches)
    decoding: deque[_DecodingBatch] = deque()
    running: deque[tuple[list[str], Future[BatchResult]]] = deque()  # (image ids, their batch's inference)

    def _stuck() -> list[str]:  # the images of the batches still running, oldest first (named by a stall)
        return [name for names, future in running if not future.done() for name in names]

    cancelled = False
    sink = job.open_sink()
    try:
        if progress is not None:
            progress(tally.progress(sink, []))
        watchdog.progress()  # the clock starts with the first batch, not with listing the folder
        while True:
            cancelled = cancelled or (cancel is not None and cancel.is_set())
            while not cancelled and len(decoding) < len(predictors) + prefetch_batches:
                batch = next(upcoming, None)
                if batch is None:
                    break
                decoding.append([(name, decode_pool.submit(decode_file, job.folder / name)) for name in batch])
            while not cancelled and decoding and len(running) < len(predictors):
                decoded = decoding.popleft()
                running.append(([name for name, _ in decoded], infer_pool.submit(_infer, decoded)))
                running[-1][1].add_done_callback(lambda _: watchdog.progress())
            if not running:
                break
            # oldest first: commits stay in listing order
            tally.queue(sink, watchdog.result(running[0][1], stuck=_stuck))
            running.popleft()
            written = tally.commit(sink)
            if progress is not None:
                progress(tally.progress(sink, written))
    finally:
        decode_pool.shutdown(wait=False, cancel_futures=True)
        infer_pool.shutdown(wait=False, cancel_futures=True)
        sink.close()
    return tally.summary(sink, cancelled)
