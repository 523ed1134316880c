"""The Ray engine: the same folder job on a Ray cluster through Ray Data, with the same output.

The driver plans the job as the local engine does (``cascade.scoring.job``: the same batches of file names,
so the predictor sees exactly the same batches) and makes a dataset of those batches (``from_items``);
``map_batches`` sends them to an autoscaling pool of actors (``ActorPoolStrategy``), each holding one
``CascadePredictor``, which read and decode the files (an unreadable file becomes an error entry, not a
failed job) and predict. The driver streams the results back and commits them through the same
``OrderedSink`` as the local engine, in listing order, so the submission and errors files are
byte-identical to the local engine's, fsync'ed per batch and resumable.

A stuck actor (a deadlocked runtime, a decoder blocked on a dead share) does not hang the driver: the
result stream is read under a ``StallWatchdog`` (``ScoreOptions.stall_timeout_s``, as in the local engine),
and when no batch result arrives for that long the run raises ``StalledError`` naming the images of the
oldest batches still out (the driver cannot see inside the actors: ``ray stack`` on their node shows their
stacks); what was committed stays resumable.

``read_binary_files`` is not used on purpose: it groups files into batches by block, so the predictor
would see other batches than the local engine's, and batch composition can move a float a hair across a
threshold.

On a multi-node cluster the images folder, the bundle path (or the installed package, for the embedded
bundle) and ``masks_dir`` must be visible at the same paths on every node (a shared filesystem).
Ray is an optional extra (``pip install 'steel-cascade[ray]'``), imported only when this engine runs.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cascade.scoring.batch import decode_file, run_batch
from cascade.scoring.job import BatchResult, JobTally, plan_job
from cascade.scoring.options import ScoreOptions
from cascade.scoring.summary import ScoreProgress, ScoreSummary
from cascade.scoring.watchdog import StallWatchdog

if TYPE_CHECKING:  # the protocol only; cascade.predictor would load the runtimes
    from cascade.predictor import Predictor

__all__ = ["RayUnavailableError", "score_folder_ray"]

logger = logging.getLogger(__name__)


_MAX_BLOCKS = 10_000


class RayUnavailableError(ImportError):
    """Ray Data is not installed."""


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RayUnavailableError(
            "the ray engine needs Ray Data, which is not installed: pip install 'steel-cascade[ray]' "
            "(or pip install 'ray[data]'); use the local engine otherwise"
        ) from exc
    return ray


class _PredictActor:
    """Ray Data callable class: one predictor per actor; one batch of file names in, its results out.

    The predictor is ``predictor_factory()`` when given, else ``CascadePredictor.from_bundle``.
    """

    def __init__(
        self,
        folder: str,
        bundle: str | None,
        device: str,
        runtime: str,
        threads: int | None,
        mode: str,
        masks_dir: str | None,
        predictor_factory: Callable[[], Predictor] | None = None,
    ) -> None:
        self._folder = Path(folder)
        if predictor_factory is not None:
            self._predictor = predictor_factory()
        else:
            from cascade.predictor import CascadePredictor

            self._predictor = CascadePredictor.from_bundle(bundle, device=device, runtime=runtime, threads=threads)
        self._mode = mode
        self._masks_dir = masks_dir

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: list[str] = []
        for index, names in zip(rows["index"], rows["batch"], strict=True):
            decoded = [(name, decode_file(self._folder / name)) for name in json.loads(str(names))]
            result = run_batch(self._predictor, decoded, mode=self._mode, masks_dir=self._masks_dir)
            payload = {
                "index": int(index),
                "rles": result.rles,
                "errors": result.errors,
                "stages": result.stages,
                "ood": result.ood,
            }
            out.append(json.dumps(payload))
        return {"result": np.array(out, dtype=object)}


def score_folder_ray(
    images_dir: str | Path,
    out_csv: str | Path,
    bundle: str | Path | None = None,
    *,
    options: ScoreOptions = ScoreOptions(),
    address: str | None = None,
    actors: int | tuple[int, int] = (1, 2),
    threads: int | None = 1,
    device: str = "cpu",
    runtime: str = "auto",
    init_kwargs: dict[str, Any] | None = None,
    predictor_factory: Callable[[], Predictor] | None = None,
    cancel: threading.Event | None = None,
    progress: Callable[[ScoreProgress], None] | None = None,
) -> ScoreSummary:
    """Score a folder on Ray (see ``score_folder`` for the output and resume contract, which is the same).

    Args:
        images_dir: folder of images (shared by every node).
        out_csv: submission written by the driver.
        bundle: bundle path seen by the workers; None loads the embedded demo bundle on each worker.
        options: batch size (the same batches as the local engine's), layout, mode, masks (written by the
            actors), resume, fsync and stall timeout (``ScoreOptions``).
        address: Ray cluster address (``"auto"``, ``"ray://head:10001"``); None starts a local instance
            unless Ray is already initialised in this process.
        actors: actor pool size, fixed (``n``) or autoscaling (``(min, max)``).
        threads: torch threads (CPUs reserved) per actor.
        device: predictor device on the actors (``"cuda"`` reserves one GPU per actor).
        runtime: predictor runtime.
        init_kwargs: extra ``ray.init`` arguments when this call starts Ray.
        predictor_factory: builds the predictor on each actor instead of ``CascadePredictor.from_bundle``
            (pickled to the workers; ``bundle`` still gives the classes).
        cancel: when set, stop after the next committed batch.
        progress: called once at the start and after every committed batch.

    Raises:
        RayUnavailableError: Ray Data is not installed.
        ResumeError: the existing output belongs to another job.
        StalledError: no batch result for ``options.stall_timeout_s``; the message names the images of the
            oldest batches still out. The output stays resumable.
    """
    watchdog = StallWatchdog(
        options.stall_timeout_s,
        what="Ray folder scoring",
        advice="an actor is stuck; `ray stack` on its node shows the workers' stacks",
    )
    sizes = (actors, actors) if isinstance(actors, int) else tuple(actors)
    if len(sizes) != 2 or not 1 <= sizes[0] <= sizes[1]:
        raise ValueError(f"actors={actors!r}; allowed: n >= 1 or (min, max) with 1 <= min <= max")
    from cascade.bundle import read_manifest
    from cascade.embedded import resolve_bundle

    class_ids = read_manifest(resolve_bundle(bundle)).class_ids
    job = plan_job(images_dir, out_csv, options, class_ids)
    ray = _import_ray() if job.batches else None
    tally = JobTally(job, "ray")
    cancelled = False
    with job.open_sink() as sink:
        if progress is not None:
            progress(tally.progress(sink, []))
        if ray is not None:
            if not ray.is_initialized():
                ray.init(address=address, **(init_kwargs or {}))
            logger.info("scoring %d batches of %s on Ray, %s actors", len(job.batches), job.folder, actors)
            items = [{"index": k, "batch": json.dumps(batch)} for k, batch in enumerate(job.batches)]
            # One batch per block: results stream back (and are committed) batch by batch.
            ds = ray.data.from_items(items, override_num_blocks=min(len(items), _MAX_BLOCKS))
            ds = ds.map_batches(
                _PredictActor,
                fn_constructor_kwargs={
                    "folder": str(job.folder.resolve()),
                    # a path is resolved here; None and shipped names are resolved by each worker's package
                    "bundle": None
                    if bundle is None
                    else (str(Path(bundle).resolve()) if Path(bundle).exists() else str(bundle)),
                    "device": device,
                    "runtime": runtime,
                    "threads": threads,
                    "mode": options.mode,
                    "masks_dir": None if options.masks_dir is None else str(options.masks_dir.resolve()),
                    "predictor_factory": predictor_factory,
                },
                batch_size=1,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(min_size=sizes[0], max_size=sizes[1]),
                num_cpus=threads or 1,
                num_gpus=1 if device.startswith("cuda") else None,
            )
            out = dict(enumerate(job.batches))  # batches without a result yet

            def _stuck() -> list[str]:  # the oldest batches still out: as many as actors may run at once
                return [name for k in sorted(out)[: sizes[1]] for name in out[k]]

            watchdog.progress()  # the clock starts with the first batch, not with listing the folder
            for row in watchdog.iterate(ds.iter_rows(), stuck=_stuck):
                payload = json.loads(row["result"])
                out.pop(payload["index"], None)
                tally.queue(sink, BatchResult(payload["rles"], payload["errors"], payload["stages"], payload["ood"]))
                written = tally.commit(sink)
                if progress is not None:
                    progress(tally.progress(sink, written))
                if cancel is not None and cancel.is_set():
                    cancelled = True
                    break
    return tally.summary(sink, cancelled)
