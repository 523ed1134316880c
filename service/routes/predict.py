"""POST /predict: one image in, ``ImagePrediction.to_dict()`` out (plus mask PNGs / overlay when asked)."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from service.deps import ERROR_RESPONSES, admit, guard_worker, loaded_limits, ready_state, require_api_key, worker_of
from service.encoding import prediction_body
from service.schemas import ErrorResponse, PredictionResponse
from service.state import ServiceState
from service.uploads import BINARY, close_form, decode_upload, multipart_body, probe_upload, read_single_upload

__all__ = ["IMAGE_REQUEST_BODY", "UPLOAD_ERRORS", "router"]

router = APIRouter(tags=["predict"], dependencies=[Depends(require_api_key), Depends(close_form)])

IMAGE_REQUEST_BODY: dict = multipart_body(
    {"file": {**BINARY, "description": "JPEG/PNG/BMP/TIFF"}},
    required=["file"],
    others={media: {"schema": BINARY} for media in ("image/jpeg", "image/png", "image/bmp", "image/tiff")},
)
"""OpenAPI request body of /predict: a multipart ``file`` part, or the image bytes themselves."""

UPLOAD_ERRORS: dict[int | str, dict] = {
    **ERROR_RESPONSES,
    408: {
        "model": ErrorResponse,
        "description": "The request body stalled (no data for --body-timeout seconds, default 10).",
    },
    413: {
        "model": ErrorResponse,
        "description": "Body, file count, image pixels, aspect ratio, padded network input, mask pixels or the "
        "request's estimated memory above the limits (the detail names the option).",
    },
    415: {"model": ErrorResponse, "description": "Not a JPEG, PNG, BMP or TIFF image."},
    422: {"model": ErrorResponse, "description": "Empty, truncated or undecodable image (the detail says why)."},
    504: {"model": ErrorResponse, "description": "Inference did not finish within the request timeout."},
}
"""Error answers of the upload routes (for the OpenAPI docs)."""

Mode = Literal["cascade", "segment_all"]


@router.post(
    "/predict",
    response_model=PredictionResponse,
    summary="Predict one image",
    responses=UPLOAD_ERRORS,
    openapi_extra={"requestBody": IMAGE_REQUEST_BODY},
)
async def predict(
    request: Request,
    masks: bool = Query(False, description="Add mask_png: class id -> base64 PNG of the mask."),
    overlay: bool = Query(False, description="Add overlay_png: base64 PNG of the image with coloured masks."),
    mode: Mode = Query("cascade", description="cascade (gate on) or segment_all (every segmenter runs)."),
    state: ServiceState = Depends(ready_state),
) -> JSONResponse:
    """Upload one image (multipart ``file``, or the raw bytes with an image content type).

    The answer is ``ImagePrediction.to_dict()`` of the cascade predictor, the same JSON as
    ``cascade predict IMAGE --json``; ``timings`` also has ``decode``, ``inference`` (queue and batch)
    and ``request`` seconds. Concurrent requests are merged into one predictor call.
    """
    settings = state.settings
    started = time.perf_counter()
    admit(worker_of(state))  # a full queue refuses before the body is even parsed
    upload = await read_single_upload(request, max_files=settings.max_files)
    limits, budget = loaded_limits(state)
    header = await probe_upload(upload, limits, masks=masks or overlay)
    cost = limits.cost(header, masks=masks, overlay=overlay, encoded=len(upload.data))
    async with budget.reserve(cost, upload.name):
        image = await decode_upload(upload, max_pixels=settings.max_image_pixels)
        decoded = time.perf_counter()
        worker = worker_of(state)
        prediction = await guard_worker(
            state, worker.predict(image, upload.name, timeout=settings.request_timeout_s, mode=mode)
        )
        predicted = time.perf_counter()
        timings = {"decode": decoded - started, "inference": predicted - decoded}
        if masks or overlay:
            body = await run_in_threadpool(
                prediction_body, prediction, image=image, extra_timings=timings, masks=masks, overlay=overlay
            )
        else:
            body = prediction_body(prediction, extra_timings=timings)
        body["timings"]["request"] = round(time.perf_counter() - started, 6)
        return JSONResponse(body)
