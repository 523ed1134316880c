"""Training a stage's independent jobs side by side on CPU: the classifier's folds (``classifier.parallel_folds``)
and the per-class segmenters (``segmenter.parallel_classes``).

Small networks keep more cores busy as N single-thread processes than as one process with N intra-op threads.
:func:`train_in_processes` runs a stage's jobs (fold indices, class ids) in spawned processes, picked up in the
order given (longest first, so the workers finish close together); each process opens the run's workspace and
calls the stage's job function, which trains one job and writes its ``done.json`` as a sequential run does. Every
job runs even when another fails; the failures are then raised together, each named.

Progress: the processes draw nothing themselves: their bar updates and log records go to the parent through a
queue, and the parent draws one bar over all the jobs, each job's epoch in its postfix, with the log lines above it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import logging.handlers
import multiprocessing
import os
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.managers import SyncManager
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from cascade.processes import die_with_parent
from training.config import PipelineConfig
from training.distributed import DistContext
from training.loop import ProgressFactory
from training.workspace import Workspace, open_workspace

__all__ = ["Job", "JobKind", "parallel_workers", "start_manager", "train_in_processes"]

logger = logging.getLogger(__name__)

Job = Callable[[Workspace, int, bool, ProgressFactory], None]
"""``job(ws, key, resume, progress)``: train the job ``key`` (a fold, a class id) and write its ``done.json``.
A module-level function, so that a spawned process can import it."""


@dataclass(frozen=True)
class JobKind:
    """How a stage's jobs are named in logs, the progress bar and errors.

    Attributes:
        stage: the stage, e.g. ``segmenter``.
        noun: one job, e.g. ``class``; ``plural``: several.
        setting: the recipe key that asks for processes, e.g. ``segmenter.parallel_classes``.
    """

    stage: str
    noun: str
    plural: str
    setting: str

    def names(self, keys: Sequence[int]) -> str:
        """``"segmenter classes 3, 1"``, or ``"segmenter class 3"`` for one key."""
        return f"{self.stage} {self.noun if len(keys) == 1 else self.plural} {', '.join(str(k) for k in keys)}"


def parallel_workers(ws: Workspace, kind: JobKind, wanted: int, pending: int) -> int:
    """How many processes to train ``pending`` jobs in: ``wanted`` (the recipe's ``kind.setting``) at most, on CPU
    single-process runs only (under torchrun or on CUDA: 1, logged)."""
    workers = min(wanted, pending)
    if workers > 1 and (ws.ctx.distributed or ws.ctx.device.type != "cpu"):
        logger.info("%s applies to CPU runs without torchrun; training %s one by one", kind.setting, kind.plural)
        return 1
    return max(1, workers)


def train_in_processes(ws: Workspace, kind: JobKind, job: Job, keys: Sequence[int], workers: int, resume: bool) -> None:
    """Run ``job`` for every key of ``keys`` in ``workers`` spawned processes, the threads split evenly between
    them (1 each on 2 threads and 2 workers); they pick the keys up in the order given.

    Raises:
        RuntimeError: some jobs failed (each named with its error; the others ran to the end and their results
            are kept), chained to the first failure.
    """
    threads = max(1, (ws.config.threads or torch.get_num_threads()) // workers)
    config = dataclasses.replace(ws.config, threads=threads)
    keys = list(keys)
    logger.info("training %s in %d processes x %d thread(s)", kind.names(keys), workers, threads)
    context = multiprocessing.get_context("spawn")
    with start_manager(context) as manager, logging_redirect_tqdm():
        events = manager.Queue()
        bar = _JobsBar(kind, keys)
        try:
            with ProcessPoolExecutor(
                max_workers=workers, mp_context=context, initializer=die_with_parent, initargs=(os.getpid(),)
            ) as pool:
                futures = {k: pool.submit(_job_process, job, config, str(ws.run_dir), k, resume, events) for k in keys}
                while not all(future.done() for future in futures.values()):
                    _show_events(events, bar, wait=0.2)
                _show_events(events, bar)  # what the jobs posted last
        finally:
            bar.close()
    failed = {k: err for k, future in futures.items() if (err := future.exception()) is not None}
    if failed:
        raise RuntimeError(_failure_message(kind, keys, failed)) from next(iter(failed.values()))


def start_manager(context: multiprocessing.context.BaseContext) -> SyncManager:
    """A started ``SyncManager`` (it serves the jobs' events queue) whose server process ends with this process.

    ``context.Manager()`` left its server process behind, asleep, each time ``cascade train`` was killed.
    """
    manager = SyncManager(ctx=context)
    manager.start(initializer=die_with_parent, initargs=(os.getpid(),))
    return manager


def _failure_message(kind: JobKind, keys: list[int], failed: dict[int, BaseException]) -> str:
    lines = "; ".join(f"{kind.names([k])} failed: {type(err).__name__}: {err}" for k, err in sorted(failed.items()))
    done = sorted(k for k in keys if k not in failed)
    kept = f" ({kind.names(done)} finished; resume keeps them)" if done else ""
    return lines + kept


def _job_process(job: Job, config: PipelineConfig, run_dir: str, key: int, resume: bool, events: Any) -> None:
    """Body of a job's process: its log records and progress go to ``events`` (the parent's queue); it writes
    nothing to the terminal."""
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(events)]
    root.setLevel(logging.INFO)
    ws = open_workspace(config, Path(run_dir), DistContext(), write_folds=False)
    job(ws, key, resume, functools.partial(_JobBar, events, key))


_POST_EVERY_S = 0.5
"""A job's process posts its bar's state at most this often (and at every epoch's end)."""


class _JobBar:
    """A job's progress bar (``fit``'s ``progress``), drawn by the parent: it posts
    ``("progress", key, n, total, postfix)`` to the parent's queue."""

    def __init__(self, events: Any, key: int, total: int, initial: int = 0, desc: str = "") -> None:
        self.events, self.key, self.total, self.n, self.postfix = events, key, total, initial, ""
        self._posted = 0.0
        self.refresh()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._posted >= _POST_EVERY_S:
            self.refresh()

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text
        if refresh:
            self.refresh()

    def refresh(self) -> None:
        self._posted = time.monotonic()
        self.events.put(("progress", self.key, self.n, self.total, self.postfix))

    def close(self) -> None:
        self.refresh()


class _JobsBar:
    """The parent's one bar over the jobs: their batches summed, each job's epoch in the postfix (one line, so it
    stays clean in a terminal and in a log file alike)."""

    def __init__(self, kind: JobKind, keys: list[int]) -> None:
        self.state: dict[int, tuple[int, int, str]] = {}  # key -> (n, total, postfix) as last posted
        self.kind, self.keys = kind, keys
        self.bar = tqdm(desc=kind.names(keys), leave=True, dynamic_ncols=True, unit="batch")

    def show(self, key: int, n: int, total: int, postfix: str) -> None:
        self.state[key] = (n, total, postfix)
        per_job = max(t for _, t, _ in self.state.values())  # jobs not started yet: as large as the largest
        self.bar.total = sum(t for _, t, _ in self.state.values()) + per_job * (len(self.keys) - len(self.state))
        self.bar.n = sum(done for done, _, _ in self.state.values())
        epochs = (f"{self.kind.noun} {k} {self.state[k][2].split(',')[0]}" for k in self.keys if k in self.state)
        self.bar.set_postfix_str(" · ".join(epochs), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _show_events(events: Any, bar: _JobsBar, wait: float = 0.0) -> None:
    """Draw what the jobs posted: bar states onto ``bar``, log records through this process's logging."""
    while True:
        try:
            event = events.get(timeout=wait) if wait else events.get_nowait()
        except queue.Empty:
            return
        wait = 0.0
        if isinstance(event, logging.LogRecord):
            logging.getLogger(event.name).handle(event)
        else:
            bar.show(*event[1:])
