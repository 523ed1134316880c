"""POST /predict/batch: many images (or a zip of them) in, a streamed submission CSV out."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from service.batching import InferenceWorker
from service.deps import loaded_limits, ready_state, require_api_key, worker_of
from service.encoding import csv_header, csv_rows
from service.errors import ServiceError
from service.limits import Reservation
from service.routes.predict import UPLOAD_ERRORS, Mode
from service.settings import ServiceSettings
from service.state import ServiceState
from service.uploads import (
    BINARY,
    Upload,
    close_form,
    decode_upload,
    is_zip,
    multipart_body,
    probe_upload,
    read_form,
    read_uploads,
    upload_name,
)
from service.zips import expand_zip

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["predict"], dependencies=[Depends(require_api_key), Depends(close_form)])

_BATCH_BODY: dict = multipart_body(
    {
        "files": {
            "type": "array",
            "items": BINARY,
            "description": "Images (JPEG/PNG/BMP/TIFF), or one or more zips of them.",
        }
    },
    required=["files"],
)


@router.post(
    "/predict/batch",
    summary="Submission CSV for many images",
    response_class=StreamingResponse,
    responses={
        **UPLOAD_ERRORS,
        200: {
            "content": {"text/csv": {"example": "ImageId_ClassId,EncodedPixels\n0002cc93b.jpg_1,1 3 10 5\n"}},
            "description": "Kaggle ImageId_ClassId submission, one row per class of the bundle and image "
            "(4 for Severstal), sorted by file name.",
        },
    },
    openapi_extra={"requestBody": _BATCH_BODY},
)
async def predict_batch(
    request: Request,
    mode: Mode = Query("cascade", description="cascade (gate on) or segment_all."),
    state: ServiceState = Depends(ready_state),
) -> StreamingResponse:
    """Upload images as multipart ``files`` parts, or zips of them; get their submission CSV.

    Every image is checked (type, size, decodability) before the answer starts, so bad input gets a
    4xx status. Rows then stream in file-name order as images finish; the images go through the same
    merging worker as ``/predict``. Should inference fail mid-way the stream is cut (no final chunk),
    never silently shortened.
    """
    settings = state.settings
    form = await read_form(request, max_files=settings.max_files)
    uploads = await _collect(read_uploads(form, allow_zip=True), settings)
    limits, budget = loaded_limits(state)
    costs = [limits.cost(await probe_upload(upload, limits), encoded=len(upload.data)) for upload in uploads]
    for upload in uploads:  # fail with a 4xx before streaming; the stream decodes again, keeping memory flat
        await decode_upload(upload, max_pixels=settings.max_image_pixels)
    worker = worker_of(state)
    if worker.depth() >= worker.queue_size:
        raise ServiceError(
            503, "inference queue is full; retry later", headers={"Retry-After": str(worker.retry_after())}
        )
    in_flight = sorted(costs, reverse=True)[: worker.max_batch_size + 1]  # images the stream holds at once
    reservation = await budget.acquire(sum(in_flight), f"a batch of {len(uploads)} images")
    return StreamingResponse(
        _stream_rows(worker, uploads, settings, mode, reservation),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="submission.csv"'},
        background=BackgroundTask(reservation.release),
    )


async def _collect(parts: Sequence, settings: ServiceSettings) -> list[Upload]:
    """Uploads from file parts and zips, sorted by name; 413 beyond ``max_files``, 422 for none or duplicates."""
    uploads: list[Upload] = []
    for part in parts:
        data = await part.read()
        if is_zip(part, data[:4]):
            name = part.filename or "upload.zip"
            uploads.extend(
                await run_in_threadpool(
                    expand_zip, data, name=name, max_files=settings.max_files, max_bytes=settings.max_upload_bytes
                )
            )
        else:
            uploads.append(Upload(upload_name(part.filename, data), data))
        if len(uploads) > settings.max_files:
            raise ServiceError(413, f"too many images: more than the limit of {settings.max_files} (--max-files)")
    if not uploads:
        raise ServiceError(422, "no images: send them as multipart 'files' parts, or a zip of them")
    names = [u.name for u in uploads]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ServiceError(422, f"duplicate image names {duplicates[:5]}: every image needs its own file name")
    return sorted(uploads, key=lambda u: u.name)


async def _stream_rows(
    worker: InferenceWorker, uploads: list[Upload], settings: ServiceSettings, mode: str, reservation: Reservation
) -> AsyncIterator[str]:
    """Header, then one row per bundle class and image in order, keeping ``max_batch_size`` images in flight."""
    timeout = settings.request_timeout_s
    pending: deque[Future] = deque()
    try:
        yield csv_header()
        for upload in uploads:
            image = await decode_upload(upload, max_pixels=settings.max_image_pixels)
            future = await asyncio.to_thread(worker.submit, image, upload.name, mode=mode, block=True, timeout=timeout)
            pending.append(future)
            while len(pending) >= worker.max_batch_size:
                yield csv_rows(await worker.wait(pending.popleft(), timeout))
        while pending:
            yield csv_rows(await worker.wait(pending.popleft(), timeout))
    except Exception:
        logger.exception("batch of %d images: cutting the CSV stream", len(uploads))
        raise
    finally:
        for future in pending:
            future.cancel()
        reservation.release()
