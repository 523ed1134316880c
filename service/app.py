"""The FastAPI app factory: routes, middleware, and the lifespan that loads the model in the background."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from cascade import __version__
from service.docs import install_docs
from service.errors import install_error_handlers
from service.metrics import MetricsMiddleware
from service.routes import batch, gui, jobs, ops, predict
from service.settings import ServiceSettings
from service.state import Loader, ServiceState, default_loader
from service.uploads import BodyLimitMiddleware

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

_DESCRIPTION = """
Steel-surface defect inspection with a classify-then-segment cascade, masks as Kaggle RLE. The classes
(ids, names, display colours) are the served bundle's, listed by `GET /model`: Severstal's 4 classes for the
default bundle, e.g. NEU-Seg's 3 for `cascade serve --bundle neu-seg`. Images of any size are accepted.

* `POST /predict` — one image in, per-class probability, presence, area and RLE out.
* `POST /predict/batch` — many images (or a zip) in, a streamed submission CSV out.
* `POST /jobs` — score a folder under the server's data root; resumable across restarts.
* `GET /` — the web GUI. `GET /model`, `/metrics`, `/healthz`, `/readyz` for operations.

When the server has an API key, send it as `X-API-Key: <key>` or `Authorization: Bearer <key>`; `/metrics`
needs it too (a Prometheus scrape job sets `authorization: {credentials: <key>}`). `/healthz`, `/readyz`, the
GUI page and these docs stay open; the docs work offline (their assets are served by this service).
"""


def create_app(settings: ServiceSettings | None = None, *, loader: Loader | None = None) -> FastAPI:
    """Build the service.

    Args:
        settings: the configuration (default: from ``CASCADE_*`` environment variables).
        loader: builds the predictor (default: ``CascadePredictor.from_bundle`` on ``settings.bundle``);
            tests pass their own.

    Returns:
        The app. Its lifespan starts loading the model in a thread and returns at once, so ``/healthz``
        answers while ``/readyz`` says 503 until the model, the worker and the job manager run.
    """
    settings = settings or ServiceSettings()
    state = ServiceState(settings=settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start_loading(loader or default_loader)
        try:
            yield
        finally:
            await run_in_threadpool(state.shutdown)

    app = FastAPI(
        title="Steel defect cascade",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # install_docs serves /docs and /redoc with local assets (no CDN)
        redoc_url=None,
        openapi_tags=[
            {"name": "predict", "description": "Predict images."},
            {"name": "jobs", "description": "Persistent folder jobs under the data root."},
            {"name": "gui", "description": "What the web GUI calls."},
            {"name": "operations", "description": "Health, readiness, metrics, the served model."},
        ],
    )
    app.state.cascade = state
    install_error_handlers(app)
    for module in (ops, predict, batch, jobs, gui):
        app.include_router(module.router)
    install_docs(app)
    app.mount("/static", StaticFiles(directory=gui.STATIC_DIR), name="static")
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes, timeout_s=settings.body_timeout_s)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    return app
