"""Prometheus metrics of one app, kept in the app's own ``CollectorRegistry`` (several apps per process stay apart).

Out-of-distribution monitoring (``cascade.ood``): every predicted image's ``ood_score`` goes into the
``cascade_ood_score`` histogram and is counted by verdict in ``cascade_ood_images``; the drift statistics are over
the last ``ood_window`` scored images: the share flagged (``cascade_ood_recent_flagged_share``, about 0.01 to 0.05
on images like the bundle's training images, rising as inputs drift) and the mean score
(``cascade_ood_recent_mean_score``, to compare with ``cascade_ood_threshold``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cascade.results import ImagePrediction

__all__ = ["CONTENT_TYPE_LATEST", "MetricsMiddleware", "ServiceMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)
_OOD_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 50.0, 100.0)
"""Scores of current references are about 1 at the training images' extremes; older ones (one MAD scale) about 5."""
OOD_WINDOW = 500
"""Recent scored images the drift statistics are computed over."""


class ServiceMetrics:
    """The service's metrics: request latency, errors, batch sizes, queue depth, per-class positives and
    out-of-distribution scores with their drift over the last ``ood_window`` scored images.

    Attributes:
        registry: the per-app registry exposed at ``/metrics``.
    """

    def __init__(self, ood_window: int = OOD_WINDOW) -> None:
        if ood_window < 1:
            raise ValueError(f"ood_window must be >= 1, got {ood_window}")
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_latency = Histogram(
            "cascade_request_latency_seconds",
            "Time from request start to the last byte of the response.",
            ("method", "route"),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.responses = Counter(
            "cascade_responses", "Responses by route and HTTP status.", ("method", "route", "status"), registry=r
        )
        self.errors = Counter("cascade_errors", "Error responses (status >= 400) by status.", ("status",), registry=r)
        self.batch_size = Histogram(
            "cascade_batch_size", "Images per merged predictor call.", buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "cascade_batch_seconds", "Seconds per merged predictor call.", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.queue_wait = Histogram(
            "cascade_queue_wait_seconds",
            "Seconds an image waited in the queue before its batch started.",
            ("priority",),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("cascade_queue_depth", "Images waiting for the worker.", ("priority",), registry=r)
        self.images = Counter("cascade_images", "Images predicted, by priority.", ("priority",), registry=r)
        self.item_failures = Counter(
            "cascade_inference_failures", "Images whose prediction raised, by exception type.", ("error",), registry=r
        )
        self.positives = Counter(
            "cascade_class_positives",
            "Images predicted to contain each class of the served bundle.",
            ("class_id", "name"),
            registry=r,
        )
        for priority in ("interactive", "background"):  # every series visible from the start
            self.queue_depth.labels(priority)
            self.queue_wait.labels(priority)
            self.images.labels(priority)
        self.model_ready = Gauge("cascade_model_ready", "1 once the bundle has loaded.", registry=r)
        self.inference_workers = Gauge(
            "cascade_inference_workers", "Inference workers (predictors) serving requests.", registry=r
        )
        self.jobs = Gauge("cascade_jobs", "Folder jobs by state.", ("state",), registry=r)
        self.ood_score = Histogram(
            "cascade_ood_score",
            "Out-of-distribution score per predicted image (cascade.ood; above cascade_ood_threshold: out of "
            "distribution). Images of a bundle without a reference are not scored.",
            buckets=_OOD_BUCKETS,
            registry=r,
        )
        self.ood_images = Counter(
            "cascade_ood_images",
            "Scored images by verdict: in_distribution is false when the score is above the threshold.",
            ("in_distribution",),
            registry=r,
        )
        self.ood_threshold = Gauge(
            "cascade_ood_threshold", "The served bundle's out-of-distribution threshold (NaN: none).", registry=r
        )
        self.ood_recent_flagged = Gauge(
            "cascade_ood_recent_flagged_share",
            f"Drift: share of the last {ood_window} scored images that were out of distribution (NaN before any).",
            registry=r,
        )
        self.ood_recent_mean = Gauge(
            "cascade_ood_recent_mean_score",
            f"Drift: mean out-of-distribution score of the last {ood_window} scored images (NaN before any).",
            registry=r,
        )
        self.ood_recent_images = Gauge(
            "cascade_ood_recent_images", f"Scored images the drift statistics cover (at most {ood_window}).", registry=r
        )
        for verdict in ("true", "false"):
            self.ood_images.labels(verdict)
        for gauge in (self.ood_threshold, self.ood_recent_flagged, self.ood_recent_mean):
            gauge.set(float("nan"))
        self._recent: deque[tuple[float, bool]] = deque(maxlen=ood_window)
        self._recent_lock = threading.Lock()
        self._recent_sum = 0.0  # of the scores in ``_recent``
        self._recent_flagged = 0  # flagged images in ``_recent``

    def register_classes(self, class_ids: Sequence[int], names: Sequence[str]) -> None:
        """Show a zero ``cascade_class_positives`` series for every class of the loaded bundle from the start."""
        for class_id, name in zip(class_ids, names, strict=True):
            self.positives.labels(str(class_id), name)

    def register_ood(self, threshold: float | None) -> None:
        """Show the served bundle's out-of-distribution threshold (None: the bundle has no reference)."""
        self.ood_threshold.set(float("nan") if threshold is None else threshold)

    def observe_predictions(self, predictions: Iterable[ImagePrediction], priority: str) -> None:
        """Count images, per-class positives and out-of-distribution verdicts; update the drift statistics."""
        scored = []
        for pred in predictions:
            self.images.labels(priority).inc()
            for cls in pred.classes:
                if cls.present:
                    self.positives.labels(str(cls.class_id), cls.name).inc()
            if pred.ood_score is not None:
                self.ood_score.observe(pred.ood_score)
                self.ood_images.labels(str(bool(pred.in_distribution)).lower()).inc()
                scored.append((float(pred.ood_score), not pred.in_distribution))
        if scored:
            with self._recent_lock:  # workers never interleave; running sums, not a pass over the window
                for score, flag in scored:
                    if len(self._recent) == self._recent.maxlen:
                        old_score, old_flag = self._recent[0]
                        self._recent_sum -= old_score
                        self._recent_flagged -= old_flag
                    self._recent.append((score, flag))
                    self._recent_sum += score
                    self._recent_flagged += flag
                count = len(self._recent)
                self.ood_recent_images.set(count)
                self.ood_recent_mean.set(self._recent_sum / count)
                self.ood_recent_flagged.set(self._recent_flagged / count)

    def render(self) -> bytes:
        """The Prometheus text exposition of this app's registry."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware timing each HTTP request until its last body byte and counting statuses.

    Routes are labelled by their path template (``/jobs/{job_id}``) so the label set stays small;
    unmatched paths are labelled ``unmatched``.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            self.metrics.request_latency.labels(method, label).observe(time.perf_counter() - start)
            self.metrics.responses.labels(method, label, str(status)).inc()
            if status >= 400:
                self.metrics.errors.labels(str(status)).inc()
