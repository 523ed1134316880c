"""Scoring a folder of images into a Kaggle submission, resumably, locally or on a Ray cluster.

Library API (the CLI ``cascade predict DIR --out submission.csv`` and the service's jobs both use it)::

    from cascade.scoring import ScoreOptions, score_folder, list_images

    options = ScoreOptions(                               # what both engines share, validated once (frozen)
        batch_size=4,                                     # images per predict call
        masks_dir=None,                                   # or a folder: masks/<stem>.png + overlays/<stem>.jpg
        layout=Layout.IMAGE_CLASS,                        # or Layout.LONG
        mode="cascade",                                   # or "segment_all"
        resume=True,                                      # continue an interrupted run (False: start afresh)
        stall_timeout_s=600,                              # no batch finished for this long: StalledError
    )
    summary = score_folder(
        "test_images/", "submission.csv", predictor,      # a CascadePredictor, or a list of them (run side by side)
        options=options,
        workers=2,                                        # decoding threads
        cancel=threading.Event(),                         # set() it to stop after the current batch
        progress=lambda p: print(p.done, p.total, p.images_per_second),   # a ScoreProgress per batch
    )                                                     # -> ScoreSummary (frozen; .to_dict() for JSON)

    score_folder_ray("test_images/", "submission.csv", bundle=None, options=options, address=None, ...)  # on Ray

Contract:

- ``list_images(dir)``: file names directly in ``dir`` with a suffix in ``SUPPORTED_SUFFIXES``
  (.jpg .jpeg .png .bmp .tif .tiff, any case), sorted; that is the scoring and row order.
- Output: ``out_csv`` in the requested layout (``IMAGE_CLASS``: a header and 4 rows per image, class ids
  1..4; ``LONG``: positive rows only, as ``cascade.formats.write_submission`` writes), images in listing
  order; unreadable images get no rows but a line in ``<stem>.errors.csv`` (``file,reason``,
  created only when some image fails) and in ``ScoreSummary.errors``. They never stop the run.
- Durability: after each batch the errors file and then the submission are flushed and fsync'ed.
- Resume (``ScoreOptions.resume``, True by default): an existing output is read back; a cut trailing line or an
  image with fewer than 4 rows is dropped, finished images are skipped and the run continues in listing order,
  so the final files are byte-identical to an uninterrupted run's. An output in another layout, or from
  another folder, raises ``ResumeError`` (``resume=False`` replaces it). Failed images are not
  retried on resume; start afresh to retry them.
- ``cancel`` (a ``threading.Event``) stops after the current batch with ``summary.cancelled`` True.
- ``progress`` receives a ``ScoreProgress`` at the start (``done`` = images resumed) and after every
  committed batch, on the scoring thread.
- Stalls: when no batch finishes for ``ScoreOptions.stall_timeout_s`` (default 600 s; None waits forever)
  either engine raises ``StalledError``, which names the images still out (``stuck``) and holds every
  thread's stack (``thread_dump``; on Ray the driver's: ``ray stack`` shows the actors'); the output stays
  resumable (``cascade.scoring.watchdog``).
- Batches are fixed slices of the whole listing, so a resumed run and the Ray engine give the predictor the
  same batches as one uninterrupted local run; resume with the same ``batch_size`` (and bundle, runtime,
  threads per predictor) to get byte-identical files. The number of predictors or Ray actors does not
  change the output.
"""

from __future__ import annotations

from cascade.scoring.folder import SUPPORTED_SUFFIXES, ResumeError, errors_path, list_images, read_resume_state
from cascade.scoring.local import score_folder
from cascade.scoring.masks import read_mask_png, write_mask_outputs
from cascade.scoring.options import ScoreOptions
from cascade.scoring.ray_engine import RayUnavailableError, score_folder_ray
from cascade.scoring.summary import ImageError, ScoreProgress, ScoreSummary
from cascade.scoring.watchdog import DEFAULT_STALL_TIMEOUT_S, StalledError, StallWatchdog, dump_threads

__all__ = [
    "DEFAULT_STALL_TIMEOUT_S",
    "SUPPORTED_SUFFIXES",
    "ImageError",
    "RayUnavailableError",
    "ResumeError",
    "ScoreOptions",
    "ScoreProgress",
    "ScoreSummary",
    "StallWatchdog",
    "StalledError",
    "dump_threads",
    "errors_path",
    "list_images",
    "read_mask_png",
    "read_resume_state",
    "score_folder",
    "score_folder_ray",
    "write_mask_outputs",
]
