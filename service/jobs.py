"""Persistent folder jobs: score a folder under the data root into a submission CSV, surviving restarts.

Each job lives in ``<state_dir>/jobs/<id>/``: ``job.json`` (its record, replaced atomically) and the
``submission.csv`` / ``submission.errors.csv`` that ``cascade.scoring.score_folder`` appends image by
image with fsync. One runner thread scores the jobs one after another; its predictor is a proxy that
sends every image to the shared inference worker at **background** priority, so jobs use the model only
while no interactive request waits and never starve ``/predict``. After a restart, or a ``kill -9``,
queued and running jobs are picked up again and ``score_folder`` resumes them: the partial trailing image
is dropped and no row is lost or written twice.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import queue
import re
import shutil
import threading
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from cascade.results import ImagePrediction
from cascade.scoring.folder import list_images
from cascade.scoring.local import score_folder
from cascade.scoring.options import ScoreOptions
from cascade.scoring.summary import ScoreProgress
from service.batching import InferenceWorker, Priority
from service.errors import ServiceError
from service.metrics import ServiceMetrics

__all__ = ["ACTIVE_STATES", "JOB_STATES", "JobManager", "JobRecord", "resolve_job_folder"]

logger = logging.getLogger(__name__)

JOB_STATES: tuple[str, ...] = ("queued", "running", "done", "failed", "cancelled")
ACTIVE_STATES: tuple[str, ...] = ("queued", "running")
_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_MAX_LISTED_ERRORS = 100


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class JobRecord:
    """What ``job.json`` holds (and ``GET /jobs/{id}`` shows)."""

    id: str
    folder: str
    mode: str = "cascade"
    state: str = "queued"
    total: int = 0
    done: int = 0
    failed: int = 0
    created: str = field(default_factory=_now)
    updated: str = field(default_factory=_now)
    error: str | None = None
    errors: tuple[dict[str, str], ...] = ()

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        out = asdict(self)
        out["errors"] = [dict(e) for e in self.errors]
        return out


def resolve_job_folder(data_root: Path | None, folder: str) -> Path:
    """The absolute folder a job may read, confined to ``data_root``.

    Raises:
        ServiceError: 501 without a data root; 403 for absolute paths, ``..`` or a symlink leaving the root
            (the folder itself or a file in it); 404 when it is not a folder.
    """
    if data_root is None:
        raise ServiceError(501, "folder jobs are disabled: start the server with --data-root (CASCADE_DATA_ROOT)")
    rel = PurePosixPath(folder)
    if "\x00" in folder or "\\" in folder or rel.is_absolute() or ".." in rel.parts:
        raise ServiceError(403, f"folder {folder!r} must be a relative path below the data root, without '..'")
    root = data_root.resolve()
    target = (root / rel).resolve()
    if not target.is_relative_to(root):
        raise ServiceError(403, f"folder {folder!r} resolves outside the data root (through a symlink)")
    if not target.is_dir():
        raise ServiceError(404, f"folder {folder!r} is not a folder under the data root")
    for entry in target.iterdir():
        if entry.is_symlink() and not entry.resolve().is_relative_to(root):
            raise ServiceError(403, f"folder {folder!r}: {entry.name!r} is a symlink leading outside the data root")
    return target


class _WorkerPredictor:
    """Predictor proxy for ``score_folder``: each image goes to the shared worker at background priority.

    ``manifest`` is the served predictor's, so the scorer can learn the bundle's classes (the rows each image
    gets in the submission) from it as it would from a ``CascadePredictor``.
    """

    def __init__(self, worker: InferenceWorker) -> None:
        self.worker = worker

    @property
    def manifest(self) -> Any:
        """The served bundle's manifest (None for a predictor without one)."""
        return getattr(self.worker.predictor, "manifest", None)

    def predict(
        self, images: Sequence[np.ndarray], image_ids: Sequence[str] | None = None, mode: str = "cascade"
    ) -> list[ImagePrediction]:
        ids = list(image_ids) if image_ids is not None else [str(i) for i in range(len(images))]
        futures = [
            self.worker.submit(image, image_id, mode=mode, priority=Priority.BACKGROUND)
            for image, image_id in zip(images, ids, strict=True)
        ]
        errors = [f.exception() for f in futures]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first
        return [f.result() for f in futures]


class JobManager:
    """Creates, runs, persists and resumes folder jobs.

    Args:
        jobs_dir: where job folders live (created).
        data_root: the only tree jobs may read (None disables jobs).
        worker: the shared inference worker.
        batch_size: images per scorer batch (the worker merges them further).
        metrics: job-state gauge (optional).
    """

    def __init__(
        self,
        jobs_dir: Path,
        data_root: Path | None,
        worker: InferenceWorker,
        *,
        batch_size: int = 4,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.jobs_dir = Path(jobs_dir)
        self.data_root = data_root
        self.worker = worker
        self.batch_size = batch_size
        self.metrics = metrics
        self._lock = threading.Lock()
        self._jobs: dict[str, JobRecord] = {}
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._cancel: dict[str, threading.Event] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cascade-jobs", daemon=True)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Load the records on disk, queue unfinished jobs (oldest first) and start the runner thread."""
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.jobs_dir.glob("*/job.json")):
            try:
                data = json.loads(path.read_text())
                record = JobRecord(**{**data, "errors": tuple(data.get("errors", ()))})
            except (OSError, ValueError, TypeError) as err:
                logger.warning("ignoring unreadable job record %s: %s", path, err)
                continue
            self._jobs[record.id] = record
        for record in sorted(self._jobs.values(), key=lambda r: r.created):
            if record.state in ACTIVE_STATES:
                logger.info("job %s (%s): resuming, %d of %d done", record.id, record.folder, record.done, record.total)
                self._enqueue(record.id)
        self._update_gauge()
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the running batch; unfinished jobs stay queued on disk and resume on the next start."""
        self._stopping.set()
        with self._lock:
            for event in self._cancel.values():
                event.set()
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ------------------------------------------------------------------ API
    def create(self, folder: str, mode: str = "cascade") -> JobRecord:
        """Validate ``folder`` (see ``resolve_job_folder``), persist a queued job and schedule it."""
        target = resolve_job_folder(self.data_root, folder)
        total = len(list_images(target))
        record = JobRecord(id=uuid.uuid4().hex, folder=folder, mode=mode, total=total)
        with self._lock:
            self._jobs[record.id] = record
            self._save(record)
        self._enqueue(record.id)
        self._update_gauge()
        return record

    def get(self, job_id: str) -> JobRecord:
        """The record of ``job_id``; 404 when unknown."""
        with self._lock:
            record = self._jobs.get(job_id) if _ID_RE.match(job_id) else None
        if record is None:
            raise ServiceError(404, f"no job with id {job_id!r}")
        return record

    def list(self) -> list[JobRecord]:
        """Every job, oldest first."""
        with self._lock:
            return sorted(self._jobs.values(), key=lambda r: r.created)

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued or running job; a finished one is deleted with its files. Returns its last record."""
        record = self.get(job_id)
        with self._lock:
            if record.state in ACTIVE_STATES:
                record = self._update(job_id, state="cancelled")
                event = self._cancel.get(job_id)
                if event is not None:
                    event.set()
            else:
                del self._jobs[job_id]
                shutil.rmtree(self.jobs_dir / job_id, ignore_errors=True)
        self._update_gauge()
        return record

    def submission_path(self, job_id: str) -> Path:
        """The finished submission of ``job_id``; 409 while it is not done."""
        record = self.get(job_id)
        if record.state != "done":
            why = f": {record.error}" if record.error else ""
            raise ServiceError(409, f"job {job_id} is {record.state}{why}; the submission exists once it is done")
        return self._job_dir(job_id) / "submission.csv"

    # ------------------------------------------------------------------ runner
    def _enqueue(self, job_id: str) -> None:
        with self._lock:
            self._cancel[job_id] = threading.Event()
        self._queue.put(job_id)

    def _run(self) -> None:
        while not self._stopping.is_set():
            job_id = self._queue.get()
            if job_id is None:
                break
            with self._lock:
                record = self._jobs.get(job_id)
                cancel = self._cancel.get(job_id)
            if record is None or cancel is None or record.state not in ACTIVE_STATES:
                continue
            try:
                self._score(record, cancel)
            except Exception as err:  # the job fails, the runner goes on
                logger.exception("job %s failed", job_id)
                self._finish(job_id, "failed", error=f"{type(err).__name__}: {err}")
            finally:
                with self._lock:
                    self._cancel.pop(job_id, None)

    def _score(self, record: JobRecord, cancel: threading.Event) -> None:
        folder = resolve_job_folder(self.data_root, record.folder)
        with self._lock:
            self._update(record.id, state="running", error=None)
        self._update_gauge()

        def _progress(tick: ScoreProgress) -> None:
            with self._lock:
                self._update(record.id, total=tick.total, done=tick.done, failed=tick.failed)

        summary = score_folder(
            folder,
            self._job_dir(record.id) / "submission.csv",
            _WorkerPredictor(self.worker),
            options=ScoreOptions(batch_size=self.batch_size, mode=record.mode, resume=True),
            workers=1,
            cancel=cancel,
            progress=_progress,
        )
        errors = tuple({"file": e.image_id, "reason": e.reason} for e in summary.errors[:_MAX_LISTED_ERRORS])
        if summary.cancelled:
            with self._lock:
                state = self._jobs[record.id].state
                # cancelled by DELETE stays cancelled; stopped by shutdown goes back to the queue
                self._update(record.id, state="cancelled" if state == "cancelled" else "queued", errors=errors)
            self._update_gauge()
            return
        self._finish(record.id, "done", total=summary.total, done=summary.done, failed=summary.failed, errors=errors)

    def _finish(self, job_id: str, state: str, **changes: object) -> None:
        with self._lock:
            if job_id in self._jobs:
                self._update(job_id, state=state, **changes)
        self._update_gauge()

    # ------------------------------------------------------------------ persistence (call with the lock held)
    def _job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def _update(self, job_id: str, **changes: object) -> JobRecord:
        record = replace(self._jobs[job_id], **changes, updated=_now())
        self._jobs[job_id] = record
        self._save(record)
        return record

    def _save(self, record: JobRecord) -> None:
        folder = self._job_dir(record.id)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "job.json.tmp"
        with tmp.open("w") as handle:
            json.dump(record.to_dict(), handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, folder / "job.json")

    def _update_gauge(self) -> None:
        if self.metrics is None:
            return
        counts = dict.fromkeys(JOB_STATES, 0)
        for record in self.list():
            counts[record.state] += 1
        for state, count in counts.items():
            self.metrics.jobs.labels(state).set(count)
