"""What one running app holds: settings, metrics, the loaded predictor, the worker, jobs and GUI sessions."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cascade.device import uses_gpu
from service.batching import InferenceWorker
from service.jobs import JobManager
from service.limits import ImageLimits, MemoryBudget
from service.metrics import ServiceMetrics
from service.samples import SampleStore
from service.sessions import SessionCache
from service.settings import ServiceSettings

if TYPE_CHECKING:  # the protocol only; cascade.predictor loads when the first predictor is built
    from cascade.predictor import Predictor

__all__ = ["Loader", "ServiceState", "bundle_label", "default_loader", "worker_plan"]

logger = logging.getLogger(__name__)

Loader = Callable[[ServiceSettings], "tuple[Predictor, str]"]
"""Builds a predictor from the settings; returns it and a label of the bundle (path or ``embedded:...``).

Called once per inference worker, one call after the other, with ``threads`` resolved by ``worker_plan``. A
loader that hands out the same object each time (tests) gets one worker: a predictor is not thread-safe.
"""


def worker_plan(settings: ServiceSettings) -> tuple[int, int | None]:
    """``(workers, threads per worker)`` for the settings.

    On CPU the default is one single-threaded predictor per core, as ``cascade predict`` scores folders:
    small networks use cores better side by side than through intra-op threads. On a GPU, one worker.
    """
    import os

    if uses_gpu(settings.device):
        return settings.workers or 1, settings.threads
    cores = os.cpu_count() or 1
    if settings.workers is None:
        threads = settings.threads or 1
        return max(1, cores // threads), threads
    return settings.workers, settings.threads or max(1, cores // settings.workers)


def bundle_label(path: Path) -> str:
    """``embedded:<name>`` for a shipped bundle (``demo``, ``neu-seg``), else the path itself."""
    from cascade.embedded import embedded_bundle_names, embedded_bundle_path

    resolved = path.resolve()
    for name in embedded_bundle_names():
        if embedded_bundle_path(name).resolve() == resolved:
            return f"embedded:{name}"
    return str(path)


def default_loader(settings: ServiceSettings) -> tuple[Predictor, str]:
    """Load ``settings.bundle`` (a path, a shipped bundle's name, or None for the embedded demo bundle)."""
    from cascade.embedded import resolve_bundle
    from cascade.predictor import CascadePredictor

    path = resolve_bundle(settings.bundle)
    predictor = CascadePredictor.from_bundle(
        path, device=settings.device, runtime=settings.runtime, threads=settings.threads
    )
    return predictor, bundle_label(path)


@dataclass
class ServiceState:
    """Mutable state of one app, reached by routes as ``request.app.state.cascade``.

    Attributes:
        settings: the app's settings.
        metrics: its Prometheus metrics.
        status: ``loading``, ``ready``, ``failed`` or ``stopped``.
        error: why loading failed.
        predictor: the loaded predictor (owned by the worker thread once it runs).
        bundle_label: path of the bundle or ``embedded:<name>``.
        worker: the inference worker.
        jobs: the folder-job manager.
        samples: GUI sample images.
        sessions: cached raw outputs for the GUI's threshold sliders.
        limits: per-image limits for the served bundle (set once loaded).
        budget: the memory all requests in flight may hold together.
    """

    settings: ServiceSettings
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)
    status: str = "loading"
    error: str | None = None
    predictor: Any = None
    bundle_label: str = ""
    worker: InferenceWorker | None = None
    jobs: JobManager | None = None
    samples: SampleStore = field(default_factory=lambda: SampleStore({}))
    sessions: SessionCache | None = None
    limits: ImageLimits | None = None
    budget: MemoryBudget | None = None
    _loader_thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        """True when requests can be served."""
        return self.status == "ready" and self.worker is not None and self.worker.alive

    def start_loading(self, loader: Loader) -> None:
        """Load the model, samples, worker and jobs in a thread, so ``/healthz`` answers meanwhile."""
        self._loader_thread = threading.Thread(target=self._load, args=(loader,), name="cascade-load", daemon=True)
        self._loader_thread.start()

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """Block until loading finished (or failed); True when it did within ``timeout``."""
        if self._loader_thread is not None:
            self._loader_thread.join(timeout)
            return not self._loader_thread.is_alive()
        return True

    def _load(self, loader: Loader) -> None:
        s = self.settings
        worker: InferenceWorker | None = None
        try:
            predictors = self._build_predictors(loader)
            predictor = predictors[0]
            manifest = getattr(predictor, "manifest", None)
            if manifest is not None:
                self.metrics.register_classes(manifest.class_ids, manifest.class_names)
                reference = getattr(manifest, "ood", None)
                self.metrics.register_ood(None if reference is None else reference.threshold)
            self.samples = self._load_samples(manifest)
            worker = InferenceWorker(
                predictors,
                max_batch_size=s.max_batch_size,
                max_wait_s=s.max_wait_ms / 1000.0,
                queue_size=s.queue_size,
                metrics=self.metrics,
            )
            worker.start()
            jobs = JobManager(s.jobs_dir, s.data_root, worker, batch_size=s.job_batch_size, metrics=self.metrics)
            jobs.start()
        except Exception as err:
            if worker is not None:
                worker.stop()
            self.status, self.error = "failed", f"{type(err).__name__}: {err}"
            logger.exception("loading the model failed")
            return
        self.predictor, self.worker, self.jobs = predictor, worker, jobs
        self.sessions = SessionCache(s.gui_cache_size, int(s.gui_cache_mb * 2**20))
        self.limits = self._image_limits(manifest)
        self.budget = MemoryBudget(s.memory_budget_bytes, s.budget_wait_s)
        if self.status != "loading":  # shut down while loading
            jobs.stop()
            worker.stop()
            return
        self.status = "ready"
        self.metrics.model_ready.set(1)
        self.metrics.inference_workers.set(worker.workers)
        logger.info(
            "ready: %s (runtime %s, %d inference workers)",
            self.bundle_label,
            getattr(predictor, "runtime_name", "?"),
            worker.workers,
        )

    def _build_predictors(self, loader: Loader) -> list[Predictor]:
        """One predictor per worker, built one after the other (first engine calls never overlap)."""
        count, threads = worker_plan(self.settings)
        settings = self.settings.model_copy(update={"threads": threads})
        predictors: list[Predictor] = []
        for _ in range(count):
            predictor, self.bundle_label = loader(settings)
            if any(predictor is p for p in predictors):
                logger.warning("the loader hands out one predictor for every worker: serving with one worker")
                break
            predictors.append(predictor)
        return predictors

    def _image_limits(self, manifest: Any) -> ImageLimits:
        from cascade.constants import CLASS_IDS
        from cascade.manifest import InputPolicy

        s = self.settings
        return ImageLimits(
            max_pixels=s.max_image_pixels,
            max_aspect_ratio=s.max_aspect_ratio,
            max_network_pixels=s.max_network_pixels,
            max_mask_pixels=s.max_mask_pixels,
            policy=getattr(manifest, "input_policy", None) or InputPolicy(),
            num_classes=len(getattr(manifest, "class_ids", CLASS_IDS)),
        )

    def _load_samples(self, manifest: Any) -> SampleStore:
        s = self.settings
        classes = getattr(manifest, "class_set", None)  # labels are read with the served bundle's classes
        if s.samples_dir is not None:
            return SampleStore.from_dir(s.samples_dir, classes=classes)
        size = getattr(manifest, "image_size", None)  # synthetic steel is Severstal-sized unless the bundle says
        return SampleStore.synthetic(s.num_samples, size=size, classes=classes)

    def shutdown(self) -> None:
        """Stop jobs first (their unfinished work stays resumable), then the worker."""
        self.status = "stopped"
        self.metrics.model_ready.set(0)
        if self.jobs is not None:
            self.jobs.stop()
        if self.worker is not None:
            self.worker.stop()
