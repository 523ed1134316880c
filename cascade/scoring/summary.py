"""What a folder-scoring run reports: per-image failures, progress ticks and the final summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["OOD_EXAMPLES", "ImageError", "ScoreProgress", "ScoreSummary"]

OOD_EXAMPLES = 5
"""Out-of-distribution images a summary names (the first ones in listing order)."""


@dataclass(frozen=True)
class ImageError:
    """One image that could not be scored.

    Attributes:
        image_id: file name inside the scored folder.
        reason: one-line reason (decode error message).
    """

    image_id: str
    reason: str


@dataclass(frozen=True)
class ScoreProgress:
    """A progress tick, sent after every committed batch.

    Attributes:
        done: images finished so far, including those resumed from an earlier run and failures.
        total: images in the folder listing.
        scored: images predicted by this run.
        failed: images that could not be read (this run and resumed).
        resumed: images already finished by an earlier, interrupted run.
        elapsed_s: seconds since this run started.
        images_per_second: images finished by this run per second.
        last_image_id: the last image committed to the output.
    """

    done: int
    total: int
    scored: int
    failed: int
    resumed: int
    elapsed_s: float
    images_per_second: float
    last_image_id: str | None = None

    @property
    def fraction(self) -> float:
        """``done / total`` (1.0 for an empty folder)."""
        return self.done / self.total if self.total else 1.0


@dataclass(frozen=True)
class ScoreSummary:
    """The outcome of scoring one folder.

    Attributes:
        images_dir: the scored folder.
        out_csv: the submission written.
        errors_csv: the list of unreadable images (``file,reason``), or None when every image was read.
        engine: ``"local"`` or ``"ray"``.
        total: images in the folder listing.
        done: images in the submission or the errors file at the end (``total`` when complete).
        scored: images predicted by this run.
        resumed: images found finished (scored or failed) in an existing output and skipped.
        failed: unreadable images (this run and resumed), listed in ``errors``.
        cancelled: True when the run stopped early (cancel event); rerun to resume.
        elapsed_s: wall-clock seconds of this run.
        images_per_second: ``(scored + newly failed) / elapsed_s``.
        stage_seconds: seconds per stage summed over batches (``decode`` plus the predictor's timings).
        errors: the unreadable images, in listing order.
        ood_scored: images of this run with an out-of-distribution score (0 when the bundle has no reference).
        ood_flagged: of those, the images out of distribution (``cascade.ood``: unlike the training images).
        ood_examples: the first ``OOD_EXAMPLES`` of them, in listing order.
    """

    images_dir: Path
    out_csv: Path
    errors_csv: Path | None
    engine: str
    total: int
    done: int
    scored: int
    resumed: int
    failed: int
    cancelled: bool
    elapsed_s: float
    images_per_second: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    errors: tuple[ImageError, ...] = ()
    ood_scored: int = 0
    ood_flagged: int = 0
    ood_examples: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """True when every listed image is in the output or in the errors file."""
        return not self.cancelled and self.done >= self.total

    def to_dict(self) -> dict:
        """JSON-ready dict (the service's job status reuses it)."""
        return {
            "images_dir": str(self.images_dir),
            "out_csv": str(self.out_csv),
            "errors_csv": str(self.errors_csv) if self.errors_csv else None,
            "engine": self.engine,
            "total": self.total,
            "done": self.done,
            "scored": self.scored,
            "resumed": self.resumed,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "complete": self.complete,
            "elapsed_s": round(self.elapsed_s, 3),
            "images_per_second": round(self.images_per_second, 3),
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
            "errors": [{"file": e.image_id, "reason": e.reason} for e in self.errors],
            "out_of_distribution": {
                "scored": self.ood_scored,
                "flagged": self.ood_flagged,
                "examples": list(self.ood_examples),
            },
        }
