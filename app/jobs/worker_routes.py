"""The worker protocol over HTTP (bodies and formats: :mod:`ml.core.protocol`).

Every write names the job and carries the fence of the worker's lease (JSON ``fence`` field, or
the ``X-Thresher-Fence`` header on binary uploads); a stale fence gets 409 and nothing is
written. Only bearer tokens are accepted (``WorkerDep``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response, status
from fastapi.responses import FileResponse

from app.auth.service import Principal
from app.datasets import access
from app.db import SessionDep, transaction
from app.jobs import manifests, service, uploads, worker_service
from app.jobs.config import JobSettings, job_settings
from app.jobs.deps import (
    DataDir,
    FenceHeader,
    FileBody,
    HeldLease,
    SmallBody,
    StreamingWorkerDep,
    WorkerDep,
)
from app.media import service as media_service
from app.media.service import SampleFile
from ml.core.protocol.messages import (
    SHA256_HEADER,
    Complete,
    Fail,
    Heartbeat,
    HeartbeatReply,
    LeaseGrant,
    LeaseRequest,
    Release,
    ResultsStored,
)

router = APIRouter(prefix="/api/worker", tags=["worker protocol"])

JobSettingsDep = Annotated[JobSettings, Depends(job_settings)]


@router.post(
    "/lease",
    responses={200: {"model": LeaseGrant}, 204: {"description": "No job for this worker now."}},
)
def lease(
    principal: WorkerDep, body: LeaseRequest, session: SessionDep, config: JobSettingsDep
) -> Response:
    """The next job this worker can run, or 204: wait (with backoff) and ask again."""
    grant = worker_service.lease_job(
        session, request=body, config=config, token_id=principal.token_id
    )
    if grant is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return Response(grant.model_dump_json(), media_type="application/json")


@router.post("/jobs/{job_id}/heartbeat")
def heartbeat(
    principal: WorkerDep,
    job_id: int,
    body: Heartbeat,
    session: SessionDep,
    config: JobSettingsDep,
) -> HeartbeatReply:
    """Renews the lease, stores progress, metrics and log lines; says whether to cancel."""
    return worker_service.record_heartbeat(
        session, job_id=job_id, message=body, config=config, token_id=principal.token_id
    )


@router.put("/jobs/{job_id}/results/{chunk}")
def upload_results(
    principal: StreamingWorkerDep,
    _: HeldLease,
    body: SmallBody,
    job_id: int,
    chunk: int,
    fence: FenceHeader,
    session: SessionDep,
    data_dir: DataDir,
) -> ResultsStored:
    """Stores chunk ``chunk`` of the job's results (a results bundle); 400 with the reason
    when it is truncated or malformed, and then nothing is stored."""
    return uploads.store_result_chunk(
        session,
        job_id=job_id,
        fence=fence,
        token_id=principal.token_id,
        index=chunk,
        data=body,
        data_dir=data_dir,
    )


@router.put("/jobs/{job_id}/artifacts/{name}", status_code=status.HTTP_201_CREATED)
def upload_artifact(
    principal: StreamingWorkerDep,
    _: HeldLease,
    upload: FileBody,
    job_id: int,
    name: str,
    fence: FenceHeader,
    session: SessionDep,
    data_dir: DataDir,
    config: JobSettingsDep,
    sha256: Annotated[str | None, Header(alias=SHA256_HEADER)] = None,
) -> dict[str, object]:
    """Stores a file of the job (a checkpoint), streamed; checked against ``X-Thresher-SHA256``."""
    artifact = uploads.store_artifact(
        session,
        job_id=job_id,
        fence=fence,
        token_id=principal.token_id,
        name=name,
        upload=upload,
        claimed_sha256=sha256,
        data_dir=data_dir,
        config=config,
    )
    return {"id": artifact.id, "name": artifact.name, "sha256": artifact.sha256}


@router.post("/jobs/{job_id}/complete")
def complete(
    principal: WorkerDep, job_id: int, body: Complete, session: SessionDep
) -> dict[str, str]:
    job = worker_service.complete_job(
        session, job_id=job_id, message=body, token_id=principal.token_id
    )
    return {"state": job.state.value}


@router.post("/jobs/{job_id}/fail")
def fail(
    principal: WorkerDep, job_id: int, body: Fail, session: SessionDep, config: JobSettingsDep
) -> dict[str, str]:
    job = worker_service.fail_job(
        session, job_id=job_id, message=body, config=config, token_id=principal.token_id
    )
    return {"state": job.state.value}


@router.post("/jobs/{job_id}/release")
def release(
    principal: WorkerDep, job_id: int, body: Release, session: SessionDep, config: JobSettingsDep
) -> dict[str, str]:
    job = worker_service.release_job(
        session, job_id=job_id, message=body, config=config, token_id=principal.token_id
    )
    return {"state": job.state.value}


@router.get("/manifests/{sha256}", response_class=FileResponse)
def manifest(
    principal: StreamingWorkerDep, request: Request, sha256: str, data_dir: DataDir
) -> FileResponse:
    """A manifest bundle (immutable: named by its content) that a job the worker holds names."""
    with transaction(request.app.state.session_factory, read_only=True) as session:
        worker_service.check_input_held(session, principal.token_id, manifest=sha256)
    path = manifests.manifest_file(data_dir, sha256)
    return FileResponse(
        path,
        media_type="application/octet-stream",
        headers={"Cache-Control": "private, max-age=31536000, immutable"},
    )


@router.get("/artifacts/{artifact_id}", response_class=FileResponse)
def artifact(
    principal: StreamingWorkerDep, request: Request, artifact_id: int, data_dir: DataDir
) -> FileResponse:
    """A stored artifact that a job the worker holds names (e.g. a teacher's checkpoint),
    streamed."""
    with transaction(request.app.state.session_factory, read_only=True) as session:
        worker_service.check_input_held(session, principal.token_id, artifact_id=artifact_id)
        found, path = service.artifact_file(session, data_dir, artifact_id)
    return FileResponse(
        path,
        media_type=found.media_type,
        headers={SHA256_HEADER: found.sha256},
        filename=found.name,
    )


def _sample_file(request: Request, principal: Principal, sample_id: int) -> SampleFile:
    with transaction(request.app.state.session_factory, read_only=True) as session:
        access.check_can_see_sample(session, principal, sample_id)
        return media_service.find_sample_file(session, sample_id)


@router.get("/samples/{sample_id}/original", response_class=FileResponse)
def sample_original(
    principal: StreamingWorkerDep, request: Request, sample_id: int
) -> FileResponse:
    """A sample's image file, for workers that cannot see the dataset's directory: only of a
    dataset one of the worker token's held jobs runs on (404 otherwise)."""
    file = _sample_file(request, principal, sample_id)
    path = media_service.original_path(file)
    return FileResponse(path, media_type=file.media_type, headers={"ETag": file.original_etag})
