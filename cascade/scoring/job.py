"""What both engines share: planning a folder job (listing, resume state, batches) and tallying its run.

Batches are fixed slices of the *whole* listing (``listing[k * batch_size:(k + 1) * batch_size]``, minus the
images an earlier run found unreadable), never of what is left to do: a resumed run, or the Ray engine,
hands the predictor exactly the batches an uninterrupted local run does. The predictor's floating-point
results can depend on what else is in the batch, and a probability a hair from a threshold would then
flip a mask pixel; equal batches keep the outputs byte-identical. Images of a half-finished batch that
are already written are predicted again and dropped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cascade.constants import CLASS_IDS
from cascade.results import ImagePrediction
from cascade.scoring.folder import ResumeError, ResumeState, errors_path, list_images, read_resume_state
from cascade.scoring.masks import check_unique_stems, missing_mask_outputs
from cascade.scoring.options import ScoreOptions
from cascade.scoring.sink import OrderedSink
from cascade.scoring.summary import OOD_EXAMPLES, ScoreProgress, ScoreSummary

__all__ = ["BatchResult", "FolderJob", "JobTally", "plan_job"]


@dataclass(frozen=True)
class FolderJob:
    """A planned folder job.

    Attributes:
        folder: the images folder.
        out_csv: the submission path.
        image_ids: the whole listing, in scoring order.
        state: what an earlier run left (``ResumeState()`` when starting afresh).
        pending: images still to write, in listing order.
        batches: the batches still to run; each holds the images to predict (pending or not).
        options: the run's options.
        class_ids: the bundle's classes (the rows each image has in the submission).
    """

    folder: Path
    out_csv: Path
    image_ids: tuple[str, ...]
    state: ResumeState
    pending: tuple[str, ...]
    batches: tuple[tuple[str, ...], ...]
    options: ScoreOptions
    class_ids: tuple[int, ...]

    @property
    def resumed(self) -> int:
        """Images finished by an earlier run."""
        return len(self.image_ids) - len(self.pending)

    def open_sink(self) -> OrderedSink:
        """The sink that commits this job's results to ``out_csv`` and its errors file, after ``state``."""
        return OrderedSink(
            self.out_csv,
            errors_path(self.out_csv),
            self.pending,
            self.options.layout,
            self.state,
            fsync=self.options.fsync,
            class_ids=self.class_ids,
        )


def plan_job(
    images_dir: str | Path, out_csv: str | Path, options: ScoreOptions, class_ids: Sequence[int] = CLASS_IDS
) -> FolderJob:
    """List the folder, read back an earlier run (when ``options.resume``) and cut the remaining work into batches.

    ``class_ids`` are the bundle's classes (the rows each image has in the submission). With
    ``options.masks_dir``, every image must have its own mask file name (``<stem>.png``), and a resumed run's
    finished images must already have their masks there: they are not predicted again, so their masks could
    not be written.

    Raises:
        ValueError: two images share a stem while ``options.masks_dir`` is given.
        ResumeError: ``options.resume`` and the existing output belongs to another job, or its finished images
            have no masks in ``options.masks_dir``.
    """
    layout, batch_size, masks_dir = options.layout, options.batch_size, options.masks_dir
    folder, out_csv = Path(images_dir), Path(out_csv)
    image_ids = tuple(list_images(folder))
    if masks_dir is not None:
        check_unique_stems(image_ids)
    state = read_resume_state(out_csv, layout, image_ids, class_ids) if options.resume else ResumeState()
    if masks_dir is not None and state.done:
        missing = missing_mask_outputs(masks_dir, state.done)
        if missing:
            raise ResumeError(
                f"{out_csv} already holds {len(state.done)} finished images, {len(missing)} of them without masks "
                f"in {masks_dir} (e.g. {missing[0]}): an earlier run scored them without --masks, and a resumed "
                "run does not predict them again; pass --overwrite to score every image again with masks, "
                "or give a new --out"
            )
    known_bad = {e.image_id for e in state.errors}
    finished = set(state.done) | known_bad
    pending = tuple(n for n in image_ids if n not in finished)
    todo = set(pending)
    batches = []
    for start in range(0, len(image_ids), batch_size):
        chunk = image_ids[start : start + batch_size]
        if any(n in todo for n in chunk):
            batches.append(tuple(n for n in chunk if n not in known_bad))
    return FolderJob(folder, out_csv, image_ids, state, pending, tuple(batches), options, tuple(class_ids))


@dataclass
class BatchResult:
    """One batch's outcome: RLEs of the predicted images, reasons of the failed ones, stage seconds, and the
    out-of-distribution verdict of each image the bundle scored (``ood``: True = out of distribution)."""

    rles: dict[str, list[str]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)
    ood: dict[str, bool] = field(default_factory=dict)

    def add_predictions(self, preds: list[ImagePrediction]) -> None:
        """Record predictions and the predictor's stage timings (per batch, so taken once)."""
        for pred in preds:
            self.rles[pred.image_id] = pred.rles
            if pred.in_distribution is not None:
                self.ood[pred.image_id] = not pred.in_distribution
        for key, seconds in (preds[0].timings if preds else {}).items():
            self.stages[key] = self.stages.get(key, 0.0) + seconds


class JobTally:
    """Counts a run's results as they are committed and builds its progress ticks and summary."""

    def __init__(self, job: FolderJob, engine: str) -> None:
        self.job = job
        self.engine = engine
        self.start = time.perf_counter()
        self.scored = 0
        self.failed = 0
        self.stages: dict[str, float] = {}
        self._pending = set(job.pending)
        self._errors_seen = len(job.state.errors)
        self._ood: dict[str, bool] = {}

    def add_stage(self, key: str, seconds: float) -> None:
        """Add ``seconds`` to stage ``key``."""
        self.stages[key] = self.stages.get(key, 0.0) + seconds

    def queue(self, sink: OrderedSink, result: BatchResult) -> None:
        """Queue a batch's pending images in ``sink`` (images written by an earlier run are dropped)."""
        for name, reason in result.errors.items():
            if name in self._pending:
                sink.add_error(name, reason)
        for name, rles in result.rles.items():
            if name in self._pending:
                sink.add_result(name, rles)
        self._ood.update((name, flagged) for name, flagged in result.ood.items() if name in self._pending)
        for key, seconds in result.stages.items():
            self.add_stage(key, seconds)

    def commit(self, sink: OrderedSink) -> list[str]:
        """Commit what is ready in ``sink`` and count it; returns the ids written."""
        start = time.perf_counter()
        written = sink.commit()
        self.add_stage("write", time.perf_counter() - start)
        new_errors = len(sink.errors) - self._errors_seen
        self._errors_seen = len(sink.errors)
        self.failed += new_errors
        self.scored += len(written) - new_errors
        return written

    def _rate(self, elapsed: float) -> float:
        return (self.scored + self.failed) / elapsed if elapsed > 0 else 0.0

    def progress(self, sink: OrderedSink, written: list[str]) -> ScoreProgress:
        """A progress tick after a commit."""
        elapsed = time.perf_counter() - self.start
        return ScoreProgress(
            done=len(self.job.image_ids) - sink.remaining,
            total=len(self.job.image_ids),
            scored=self.scored,
            failed=len(sink.errors),
            resumed=self.job.resumed,
            elapsed_s=elapsed,
            images_per_second=self._rate(elapsed),
            last_image_id=written[-1] if written else None,
        )

    def summary(self, sink: OrderedSink, cancelled: bool) -> ScoreSummary:
        """The run's summary (call after the last commit)."""
        elapsed = time.perf_counter() - self.start
        errors = tuple(sink.errors)
        flagged = [name for name in self.job.image_ids if self._ood.get(name)]  # listing order
        return ScoreSummary(
            images_dir=self.job.folder,
            out_csv=self.job.out_csv,
            errors_csv=sink.errors_csv if errors else None,
            engine=self.engine,
            total=len(self.job.image_ids),
            done=len(self.job.image_ids) - sink.remaining,
            scored=self.scored,
            resumed=self.job.resumed,
            failed=len(errors),
            cancelled=cancelled and sink.remaining > 0,
            elapsed_s=elapsed,
            images_per_second=self._rate(elapsed),
            stage_seconds=dict(self.stages),
            errors=errors,
            ood_scored=len(self._ood),
            ood_flagged=len(flagged),
            ood_examples=tuple(flagged[:OOD_EXAMPLES]),
        )
