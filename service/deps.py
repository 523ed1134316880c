"""Route dependencies: the app state, readiness, the API key, and worker errors mapped to HTTP statuses."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.batching import InferenceWorker, QueueFullError, RequestTimeoutError, WorkerStoppedError
from service.errors import ServiceError
from service.limits import ImageLimits, MemoryBudget
from service.state import ServiceState

__all__ = ["ERROR_RESPONSES", "admit", "get_state", "guard_worker", "loaded_limits", "ready_state", "require_api_key"]

T = TypeVar("T")

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key (when one is set).")
_bearer = HTTPBearer(auto_error=False, description="The API key as a bearer token (when one is set).")

ERROR_RESPONSES: dict[int | str, dict] = {
    401: {"description": "Missing or wrong API key."},
    503: {"description": "Model not loaded yet, or the inference queue is full (see Retry-After)."},
}
"""Error statuses common to the authenticated model routes (for the OpenAPI docs)."""


async def get_state(request: Request) -> ServiceState:
    """The app's ``ServiceState``.

    The route dependencies here are ``async def`` although they never await: FastAPI runs a plain ``def``
    dependency in the threadpool, and three such hops per request cost the event loop more CPU than the
    HTTP parsing (``bench/bench_service.py``)."""
    return request.app.state.cascade


async def require_api_key(
    state: ServiceState = Depends(get_state),
    x_api_key: str | None = Depends(_api_key_header),
    bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
) -> None:
    """401 unless the configured key came as ``X-API-Key`` or ``Authorization: Bearer`` (no key set: open)."""
    expected = state.settings.api_key
    if expected is None:
        return
    supplied = x_api_key if x_api_key is not None else (bearer.credentials if bearer is not None else None)
    if supplied is None:
        raise ServiceError(
            401,
            "missing API key: send it as X-API-Key or Authorization: Bearer",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not secrets.compare_digest(supplied.encode(), expected.get_secret_value().encode()):
        raise ServiceError(401, "wrong API key", headers={"WWW-Authenticate": "Bearer"})


async def ready_state(state: ServiceState = Depends(get_state)) -> ServiceState:
    """The state, or 503 (with Retry-After while loading) when the model is not ready."""
    if state.ready:
        return state
    if state.status == "loading":
        raise ServiceError(503, "the model is still loading; retry shortly", headers={"Retry-After": "2"})
    why = f": {state.error}" if state.error else ""
    raise ServiceError(503, f"the model is not available ({state.status}{why})")


def loaded_limits(state: ServiceState) -> tuple[ImageLimits, MemoryBudget]:
    """The per-image limits and the memory budget (503 before the model has loaded)."""
    if state.limits is None or state.budget is None:
        raise ServiceError(503, "the model is still loading; retry shortly", headers={"Retry-After": "2"})
    return state.limits, state.budget


def worker_of(state: ServiceState) -> InferenceWorker:
    """The running worker (503 when there is none)."""
    if state.worker is None:
        raise ServiceError(503, "the inference worker is not running")
    return state.worker


def admit(worker: InferenceWorker) -> None:
    """503 with ``Retry-After`` at once when the interactive queue is full, before the request is decoded.

    Under overload this keeps refusals cheap (no decode for an image that would be refused anyway), so the
    cores keep predicting the images already queued.
    """
    if worker.depth() >= worker.queue_size:
        retry = worker.retry_after()
        raise ServiceError(503, f"inference queue is full; retry in {retry} s", headers={"Retry-After": str(retry)})


async def guard_worker(state: ServiceState, call: Awaitable[T]) -> T:
    """Await a worker call, mapping its failures: queue full 503, timeout 504, bad input 422, others 500."""
    try:
        return await call
    except QueueFullError as err:
        raise ServiceError(503, str(err), headers={"Retry-After": str(err.retry_after)}) from err
    except RequestTimeoutError as err:
        raise ServiceError(504, str(err)) from err
    except WorkerStoppedError as err:
        raise ServiceError(503, str(err)) from err
    except ValueError as err:
        raise ServiceError(422, f"the predictor refused the image: {err}") from err
    except Exception as err:
        raise ServiceError(500, f"prediction failed: {type(err).__name__}: {err}") from err
