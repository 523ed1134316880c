"""Service errors: one exception type carrying an HTTP status, and the handlers that render them as JSON."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

__all__ = ["ServiceError", "install_error_handlers"]

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """A request the service refuses, with the HTTP status and a message saying why.

    Attributes:
        status_code: HTTP status of the answer.
        detail: human-readable reason (the ``detail`` field of the JSON body).
        headers: extra response headers (e.g. ``Retry-After``).
    """

    def __init__(self, status_code: int, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers or {}


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, ServiceError):  # registered for ServiceError only
        return await _unexpected_error(request, exc)
    if exc.status_code >= 500:
        logger.warning("%s %s -> %d: %s", request.method, request.url.path, exc.status_code, exc.detail)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):  # registered for RequestValidationError only
        return await _unexpected_error(request, exc)
    problems = [f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}" for err in exc.errors()]
    return JSONResponse({"detail": "invalid request: " + "; ".join(problems)}, status_code=422)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Render ``ServiceError``, validation errors and unexpected errors as ``{"detail": ...}`` JSON."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
