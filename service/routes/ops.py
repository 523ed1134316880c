"""Operations routes: /healthz, /readyz (both open), /metrics and /model (behind the API key)."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from cascade.classes import SEVERSTAL
from cascade.constants import IMAGE_SHAPE
from cascade.gate_curve import gate_summary
from cascade.manifest import BundleManifest
from service.deps import ERROR_RESPONSES, get_state, ready_state, require_api_key
from service.metrics import CONTENT_TYPE_LATEST
from service.schemas import HealthResponse, ModelInfo, ReadyResponse
from service.state import ServiceState

__all__ = ["nominal_image_size", "router"]

router = APIRouter(tags=["operations"])


def nominal_image_size(manifest: BundleManifest) -> tuple[int, int] | None:
    """``(H, W)`` the bundle was made for: the manifest's, else Severstal's for Severstal's classes, else None."""
    if manifest.image_size is not None:
        return manifest.image_size
    return IMAGE_SHAPE if manifest.class_ids == SEVERSTAL.ids else None


@router.get("/healthz", response_model=HealthResponse, summary="Liveness: the process answers")
async def healthz() -> HealthResponse:
    """Always 200 while the process runs, also while the model loads."""
    return HealthResponse()


@router.get(
    "/readyz",
    response_model=ReadyResponse,
    summary="Readiness: the model has loaded",
    responses={503: {"model": ReadyResponse, "description": "Still loading, or loading failed."}},
)
async def readyz(state: ServiceState = Depends(get_state)) -> JSONResponse:
    """200 once the bundle has loaded and the inference worker runs, 503 before (and after a failed load)."""
    body = ReadyResponse(ready=state.ready, status=state.status, detail=state.error)
    headers = {"Retry-After": "2"} if state.status == "loading" else {}
    return JSONResponse(body.model_dump(), status_code=200 if state.ready else 503, headers=headers)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    dependencies=[Depends(require_api_key)],
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Text exposition format."}},
    response_class=Response,
)
async def metrics(state: ServiceState = Depends(get_state)) -> Response:
    """Request latency histograms, batch sizes, queue depth, per-class positives, errors by status, and
    out-of-distribution monitoring: ``cascade_ood_score`` (histogram of every predicted image's score),
    ``cascade_ood_images{in_distribution}`` (verdict counts), ``cascade_ood_threshold`` and the drift over the last
    500 scored images: ``cascade_ood_recent_flagged_share`` (share out of distribution; about 0.01-0.05 on inputs
    like the training images) and ``cascade_ood_recent_mean_score``."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/model",
    response_model=ModelInfo,
    summary="The served bundle",
    dependencies=[Depends(require_api_key)],
    responses=ERROR_RESPONSES,
)
async def model(state: ServiceState = Depends(ready_state)) -> ModelInfo:
    """The bundle's manifest: classes (ids, names, colours), image size, thresholds, architectures, provenance,
    and the runtime chosen here."""
    manifest = state.predictor.manifest
    data = manifest.to_dict()
    return ModelInfo(
        bundle=state.bundle_label,
        runtime=str(getattr(state.predictor, "runtime_name", "unknown")),
        device=str(getattr(state.predictor, "device", "unknown")),
        class_ids=list(manifest.class_ids),
        class_names=list(manifest.class_names),
        class_colours=list(manifest.class_colours),
        image_size=nominal_image_size(manifest),
        thresholds=[
            {"class_id": cid, **dataclasses.asdict(params)}
            for cid, params in zip(manifest.class_ids, manifest.classes, strict=True)
        ],
        classifier=data["classifier"],
        segmenters=data["segmenters"],
        provenance=data["provenance"],
        gate=gate_summary(manifest),
        manifest=data,
    )
