"""The web GUI: the page and its assets, sample images, and the analyse / re-post-process calls it makes.

The page asks ``POST /gui/analyze`` once per image: the worker runs ``predictor.infer`` in
``segment_all`` mode (every class gets a probability map, so any threshold the sliders pick can be
honoured) and the raw output is kept in an LRU cache. Each slider move posts the thresholds to
``POST /postprocess/{session_id}``, which re-runs only ``predictor.postprocess`` on the cached output with
the new ``ClassParams`` — the gate included: a class whose classifier probability is below its
``prob_threshold`` stays absent, exactly as ``predict`` would answer with those parameters.
"""

from __future__ import annotations

import base64
import dataclasses
import io
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from cascade.manifest import ClassParams
from service.deps import (
    ERROR_RESPONSES,
    get_state,
    guard_worker,
    loaded_limits,
    ready_state,
    require_api_key,
    worker_of,
)
from service.encoding import mask_png_b64, prediction_body
from service.errors import ServiceError
from service.routes.ops import nominal_image_size
from service.routes.predict import UPLOAD_ERRORS
from service.schemas import (
    ErrorResponse,
    GuiClass,
    GuiConfig,
    PostprocessRequest,
    SampleInfo,
    SampleTruthResponse,
    SessionResponse,
)
from service.sessions import Session, SessionTooLargeError
from service.state import ServiceState
from service.uploads import (
    BINARY,
    Upload,
    close_form,
    decode_upload,
    multipart_body,
    probe_upload,
    read_form,
    read_uploads,
    upload_name,
)

__all__ = ["STATIC_DIR", "router"]

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
"""The page, script and style sheet served at ``/`` and ``/static``."""

router = APIRouter(tags=["gui"])
_api = [Depends(require_api_key)]


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    """The single-page GUI."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@router.get("/gui/config", response_model=GuiConfig, summary="What the GUI needs", dependencies=_api)
async def config(state: ServiceState = Depends(ready_state)) -> GuiConfig:
    """The model, its classes (ids, names, overlay colours, default parameters), its image size, the samples
    and the out-of-distribution threshold the page's warning compares ``ood_score`` with.

    The page builds its legend, class toggles and threshold sliders from ``classes``: nothing in it is fixed to
    one class set.
    """
    manifest = state.predictor.manifest
    reference = getattr(manifest, "ood", None)
    return GuiConfig(
        bundle=state.bundle_label,
        runtime=str(getattr(state.predictor, "runtime_name", "unknown")),
        device=str(getattr(state.predictor, "device", "unknown")),
        classes=[
            GuiClass(class_id=cid, name=name, colour=colour, params=dataclasses.asdict(params))
            for cid, name, colour, params in zip(
                manifest.class_ids, manifest.class_names, manifest.class_colours, manifest.classes, strict=True
            )
        ],
        image_size=nominal_image_size(manifest),
        samples=_sample_list(state),
        ood_threshold=None if reference is None else float(reference.threshold),
    )


def _sample_list(state: ServiceState) -> list[SampleInfo]:
    infos = []
    for name in state.samples.names():
        truth = state.samples.truth(name)
        labelled = {} if truth is None else {"classes": list(truth.present), "truth_url": f"/gui/samples/{name}/truth"}
        infos.append(SampleInfo(name=name, url=f"/gui/samples/{name}", **labelled))
    return infos


@router.get("/gui/samples", response_model=list[SampleInfo], summary="GUI sample images")
async def samples(state: ServiceState = Depends(get_state)) -> list[SampleInfo]:
    """The sample images (synthetic, or from ``--samples-dir``) and the classes the labelled ones hold."""
    return _sample_list(state)


@router.get(
    "/gui/samples/{name}/truth",
    response_model=SampleTruthResponse,
    summary="One sample's ground truth",
    responses={404: {"model": ErrorResponse, "description": "Unknown sample, or a sample without labels."}},
)
async def sample_truth(name: str, state: ServiceState = Depends(get_state)) -> SampleTruthResponse:
    """The labelled masks of one sample as PNGs (the page draws them as dashed outlines)."""
    if state.samples.get(name) is None:
        raise ServiceError(404, f"no sample named {name!r}; see /gui/samples")
    truth = state.samples.truth(name)
    if truth is None:
        raise ServiceError(404, f"sample {name!r} has no labels (no ground truth beside it)")
    masks = await run_in_threadpool(truth.masks)
    height, width = truth.shape
    return SampleTruthResponse(
        name=name,
        height=height,
        width=width,
        classes=list(truth.present),
        mask_png={str(cid): mask_png_b64(mask) for cid, mask in zip(truth.class_ids, masks, strict=True)},
    )


@router.get(
    "/gui/samples/{name}",
    summary="One sample image",
    response_class=Response,
    responses={404: {"model": ErrorResponse}},
)
async def sample(name: str, state: ServiceState = Depends(get_state)) -> Response:
    """The bytes of one sample image."""
    data = state.samples.get(name)
    if data is None:
        raise ServiceError(404, f"no sample named {name!r}; see /gui/samples")
    return Response(data, media_type=state.samples.media_type(name), headers={"Cache-Control": "max-age=3600"})


@router.post(
    "/gui/analyze",
    response_model=SessionResponse,
    summary="Analyse one image for the GUI",
    dependencies=[*_api, Depends(close_form)],
    responses=UPLOAD_ERRORS,
    openapi_extra={
        "requestBody": multipart_body(
            {"file": BINARY, "sample": {"type": "string", "description": "Name of a sample instead of a file."}}
        )
    },
)
async def analyze(request: Request, state: ServiceState = Depends(ready_state)) -> JSONResponse:
    """Predict with every segmenter's map kept, cache the raw output and answer with masks as PNGs."""
    settings = state.settings
    upload = await _gui_upload(request, state)
    limits, budget = loaded_limits(state)
    header = await probe_upload(upload, limits)  # the GUI cache's bound below also bounds its mask PNGs
    if state.sessions is None:
        raise ServiceError(503, "the GUI cache is not ready")
    _check_session_size(header.pixels * limits.num_classes * 4, state.sessions.max_bytes)  # float32 maps
    async with budget.reserve(limits.cost(header, masks=True, encoded=len(upload.data)), upload.name):
        image = await decode_upload(upload, max_pixels=settings.max_image_pixels)
        worker = worker_of(state)
        image_id = upload.name

        def _infer(predictor: object) -> object:
            return predictor.infer([image], image_ids=[image_id], mode="segment_all")  # type: ignore[attr-defined]

        raw = await guard_worker(state, worker.wait(worker.submit_call(_infer), settings.request_timeout_s))
        params = tuple(state.predictor.manifest.classes)
        session = Session(image_id=image_id, raw=raw, segmented=_segmented(raw, state.predictor.manifest.class_ids))
        try:
            session_id = state.sessions.add(session)
        except SessionTooLargeError as err:
            raise ServiceError(413, f"{image_id}: {err}") from err
        body = await run_in_threadpool(_session_body, state, session, session_id, params, image)
        return JSONResponse(body)


def _check_session_size(nbytes: int, max_bytes: int | None) -> None:
    """413 before inference when an analysis could never fit the GUI cache."""
    if max_bytes is not None and nbytes > max_bytes:
        raise ServiceError(
            413,
            f"this image's maps would hold {nbytes / 2**20:.0f} MiB, more than the GUI cache's "
            f"{max_bytes / 2**20:.0f} MiB (CASCADE_GUI_CACHE_MB); analyse a smaller image",
        )


@router.post(
    "/postprocess/{session_id}",
    response_model=SessionResponse,
    summary="Re-run post-processing with other thresholds",
    dependencies=_api,
    responses={**ERROR_RESPONSES, 404: {"model": ErrorResponse, "description": "Unknown or evicted session."}},
)
async def postprocess(
    session_id: str, body: PostprocessRequest, state: ServiceState = Depends(ready_state)
) -> JSONResponse:
    """Apply new per-class parameters to a cached analysis (no network runs; the gate is re-applied)."""
    session = state.sessions.get(session_id) if state.sessions is not None else None
    if session is None:
        raise ServiceError(404, f"no cached analysis {session_id!r} (evicted or unknown); analyse the image again")
    manifest = state.predictor.manifest
    params = list(manifest.classes)
    for update in body.classes:
        try:
            index = manifest.class_index(update.class_id)
            changes = {k: v for k, v in update.model_dump(exclude={"class_id"}).items() if v is not None}
            params[index] = dataclasses.replace(params[index], **changes)
        except ValueError as err:
            raise ServiceError(422, str(err)) from err
    return JSONResponse(await run_in_threadpool(_session_body, state, session, session_id, tuple(params), None))


def _session_body(
    state: ServiceState,
    session: Session,
    session_id: str,
    params: tuple[ClassParams, ...],
    image: np.ndarray | None,
) -> dict:
    # the raw output has every map (segment_all); the gate is applied here with the chosen thresholds
    prediction = state.predictor.postprocess(session.raw, params=params, mode="cascade")[0]
    body = prediction_body(prediction, masks=True)
    body["session_id"] = session_id
    body["params"] = [
        {"class_id": cid, **dataclasses.asdict(p)}
        for cid, p in zip(state.predictor.manifest.class_ids, params, strict=True)
    ]
    body["segmented"] = list(session.segmented)
    if image is not None:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=90)
        body["image_jpeg"] = base64.b64encode(buf.getvalue()).decode("ascii")
    return body


def _segmented(raw: object, class_ids: tuple[int, ...]) -> tuple[int, ...]:
    """Class ids with a probability map in a one-image ``RawOutput``."""
    segmented = np.asarray(raw.segmented)[0]  # type: ignore[attr-defined]
    return tuple(cid for k, cid in enumerate(class_ids) if segmented[k])


async def _gui_upload(request: Request, state: ServiceState) -> Upload:
    form = await read_form(request, max_files=state.settings.max_files, allow_urlencoded=True)
    parts = read_uploads(form, allow_zip=False)
    if len(parts) > 1:
        raise ServiceError(422, f"send one image per analysis as the multipart 'file' part (got {len(parts)} files)")
    if parts:
        data = await parts[0].read()
        return Upload(upload_name(parts[0].filename, data), data)
    name = form.get("sample")
    if not isinstance(name, str) or not name:
        raise ServiceError(422, "send an image as the multipart 'file' part, or a sample name as 'sample'")
    data = state.samples.get(name)
    if data is None:
        raise ServiceError(404, f"no sample named {name!r}; see /gui/samples")
    return Upload(name, data)
