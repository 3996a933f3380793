"""Jobs API (engineers): create, list, inspect, cancel and retry jobs; results and artifacts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import FileResponse

from app.auth.deps import EngineerDep
from app.datasets import access
from app.db import SessionDep
from app.errors import NotFound
from app.jobs import manifests, service, specs
from app.jobs.config import JobSettings, job_settings
from app.jobs.deps import DataDir, JobDatasetsDep, JobDep, SmallBody
from app.jobs.schemas import (
    ArtifactRead,
    JobCreate,
    JobDetailRead,
    JobRead,
    ManifestCreated,
    MetricRead,
)
from app.models import JobState
from ml.core.protocol.bundles import encode_results
from ml.core.protocol.jobs import JobKind
from ml.core.protocol.messages import SHA256_HEADER

router = APIRouter(prefix="/api/jobs", tags=["jobs"])

JobSettingsDep = Annotated[JobSettings, Depends(job_settings)]


@router.post("", status_code=status.HTTP_201_CREATED)
def create_job(
    principal: EngineerDep,
    body: JobCreate,
    session: SessionDep,
    data_dir: DataDir,
    config: JobSettingsDep,
) -> JobRead:
    """Queues a job; a worker that can run its kind on its device will lease it. A job on a
    dataset needs the right to see it."""
    if body.dataset_id is not None:
        access.check_can_see(session, principal, body.dataset_id)
    job = specs.create_job_from_request(
        session, body=body, user=principal.user, data_dir=data_dir, config=config
    )
    return JobRead.model_validate(job)


@router.get("")
def list_jobs(
    _: EngineerDep,
    session: SessionDep,
    visible: JobDatasetsDep,
    state: Annotated[list[JobState] | None, Query()] = None,
    kind: JobKind | None = None,
    dataset_id: int | None = None,
    before_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 100,
) -> list[JobRead]:
    """Newest first; pass the last id as ``before_id`` for the next page. Only the jobs the
    caller may see (on a dataset it may see, or on none)."""
    jobs = service.list_jobs(
        session,
        states=state or (),
        kind=kind,
        dataset_id=dataset_id,
        visible=visible,
        before_id=before_id,
        limit=limit,
    )
    return [JobRead.model_validate(job) for job in jobs]


@router.post("/manifests", status_code=status.HTTP_201_CREATED)
def upload_manifest(_: EngineerDep, body: SmallBody, data_dir: DataDir) -> ManifestCreated:
    """Stores a manifest bundle (see :mod:`ml.core.protocol.bundles`) for jobs to name in a
    sample set."""
    return ManifestCreated(manifest=manifests.store_manifest_bytes(data_dir, body))


@router.get("/{job_id}")
def read_job(_: EngineerDep, job: JobDep, session: SessionDep) -> JobDetailRead:
    detail = service.job_detail(session, job)
    return JobDetailRead.model_validate(
        {
            **JobRead.model_validate(job).model_dump(),
            "metrics": [MetricRead.model_validate(m) for m in detail.metrics],
            "artifacts": [ArtifactRead.model_validate(a) for a in detail.artifacts],
            "log_tail": job.log_tail.splitlines(),
            "result_rows": detail.result_rows,
            "result_chunks": detail.result_chunks,
        }
    )


@router.post("/{job_id}/cancel")
def cancel_job(_: EngineerDep, job: JobDep, session: SessionDep) -> JobRead:
    """Cancels a queued job now; a running one stops at its worker's next step boundary."""
    return JobRead.model_validate(service.cancel_job(session, job_id=job.id))


@router.post("/{job_id}/retry")
def retry_job(_: EngineerDep, job: JobDep, session: SessionDep) -> JobRead:
    """Queues a failed or cancelled job again, with a fresh budget of attempts."""
    return JobRead.model_validate(service.retry_job(session, job_id=job.id))


@router.get(
    "/{job_id}/results",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_results(_: EngineerDep, job: JobDep, session: SessionDep) -> Response:
    """Every stored result of the job as one results bundle, by sample id."""
    results = service.job_results(session, job)
    if len(results) == 0:
        raise NotFound(f"job {job.id} has no results stored")
    data = encode_results(results)
    return Response(data, media_type="application/octet-stream")


@router.get("/{job_id}/artifacts/{name}", response_class=FileResponse)
def download_artifact(
    _: EngineerDep, request: Request, job: JobDep, name: str, session: SessionDep, data_dir: DataDir
) -> FileResponse:
    artifact, path = service.artifact_by_name(session, data_dir, job_id=job.id, name=name)
    return FileResponse(
        path,
        media_type=artifact.media_type,
        filename=artifact.name,
        headers={SHA256_HEADER: artifact.sha256},
    )
