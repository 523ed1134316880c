"""Folder jobs: POST /jobs, GET /jobs, GET /jobs/{id}, GET /jobs/{id}/submission.csv, DELETE /jobs/{id}."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from service.deps import ERROR_RESPONSES, ready_state, require_api_key
from service.errors import ServiceError
from service.jobs import JobManager, JobRecord
from service.schemas import ErrorResponse, JobCreate, JobStatus
from service.state import ServiceState

__all__ = ["router"]

router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=[Depends(require_api_key)])

_NOT_FOUND = {404: {"model": ErrorResponse, "description": "No such job."}}


async def _jobs(state: ServiceState = Depends(ready_state)) -> JobManager:
    if state.jobs is None:
        raise ServiceError(503, "the job manager is not running")
    return state.jobs


def _status(record: JobRecord) -> JobStatus:
    return JobStatus(**record.to_dict())


@router.post(
    "",
    status_code=202,
    response_model=JobStatus,
    summary="Score a folder under the data root",
    responses={
        **ERROR_RESPONSES,
        403: {"model": ErrorResponse, "description": "The folder is outside the data root ('..', absolute, symlink)."},
        404: {"model": ErrorResponse, "description": "No such folder under the data root."},
        501: {"model": ErrorResponse, "description": "Jobs are disabled (no --data-root)."},
    },
)
async def create_job(body: JobCreate, jobs: JobManager = Depends(_jobs)) -> JSONResponse:
    """Queue a job scoring every image of ``folder`` (relative to ``--data-root``) into a submission CSV.

    Jobs persist under ``<state-dir>/jobs`` and resume after a restart; they use the model only while
    no interactive request waits.
    """
    record = await run_in_threadpool(jobs.create, body.folder, body.mode)
    return JSONResponse(_status(record).model_dump(), status_code=202, headers={"Location": f"/jobs/{record.id}"})


@router.get("", response_model=list[JobStatus], summary="Every job", responses=ERROR_RESPONSES)
async def list_jobs(jobs: JobManager = Depends(_jobs)) -> list[JobStatus]:
    """All jobs, oldest first."""
    return [_status(r) for r in jobs.list()]


@router.get("/{job_id}", response_model=JobStatus, summary="A job's progress", responses=_NOT_FOUND)
async def get_job(job_id: str, jobs: JobManager = Depends(_jobs)) -> JobStatus:
    """State (queued, running, done, failed, cancelled), total, done and failed images."""
    return _status(jobs.get(job_id))


@router.get(
    "/{job_id}/submission.csv",
    summary="A finished job's submission",
    response_class=FileResponse,
    responses={
        **_NOT_FOUND,
        200: {"content": {"text/csv": {}}, "description": "The submission CSV."},
        409: {"model": ErrorResponse, "description": "The job is not done (yet)."},
    },
)
async def job_submission(job_id: str, jobs: JobManager = Depends(_jobs)) -> FileResponse:
    """The submission CSV, once the job is done (409 before)."""
    return FileResponse(jobs.submission_path(job_id), media_type="text/csv", filename=f"submission-{job_id}.csv")


@router.delete("/{job_id}", response_model=JobStatus, summary="Cancel (or delete) a job", responses=_NOT_FOUND)
async def delete_job(job_id: str, jobs: JobManager = Depends(_jobs)) -> JobStatus:
    """Cancel a queued or running job (it stops after its current batch); delete a finished one with its files."""
    return _status(await run_in_threadpool(jobs.cancel, job_id))
