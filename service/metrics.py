"""Prometheus metrics of one app, kept in the app's own ``CollectorRegistry`` (several apps per process stay apart)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cascade.results import ImagePrediction

__all__ = ["CONTENT_TYPE_LATEST", "MetricsMiddleware", "ServiceMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)


class ServiceMetrics:
    """The service's metrics: request latency, errors, batch sizes, queue depth, per-class positives.

    Attributes:
        registry: the per-app registry exposed at ``/metrics``.
    """

    def __init__(self) -> None:
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

    def register_classes(self, class_ids: Sequence[int], names: Sequence[str]) -> None:
        """Show a zero ``cascade_class_positives`` series for every class of the loaded bundle from the start."""
        for class_id, name in zip(class_ids, names, strict=True):
            self.positives.labels(str(class_id), name)

    def observe_predictions(self, predictions: Iterable[ImagePrediction], priority: str) -> None:
        """Count images and per-class positives."""
        for pred in predictions:
            self.images.labels(priority).inc()
            for cls in pred.classes:
                if cls.present:
                    self.positives.labels(str(cls.class_id), cls.name).inc()

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
