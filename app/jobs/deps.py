"""Dependencies of the job routes: who may speak the worker protocol, 404s, request bodies.

**Which jobs an engineer sees.** A job on a dataset is seen by those who may see the dataset
(:mod:`app.datasets.access`); to anyone else it answers 404, as if it did not exist, and it is
left out of lists. A job on no dataset (a manifest an engineer uploaded) is seen by every
engineer.

**Who is a worker.** ``WorkerDep`` admits bearer tokens of the ``worker`` scope only
(``thresher tokens create --scope worker``). An engineer's API token is refused: a worker's
writes are bound to its lease, and a token that can also create, cancel and read every job
should not be able to act as a worker too. A worker token cannot use the engineer API either
(``require_role`` refuses it). Browser sessions are refused: the protocol is for programs, and
cookie-authenticated writes would need CSRF tokens.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool

from app.auth.deps import CurrentPrincipal, EngineerDep, optional_principal
from app.auth.service import Principal
from app.datasets import access
from app.db import SessionDep, transaction
from app.errors import AppError, Forbidden, NotAuthenticated, NotFound
from app.jobs import service, uploads, worker_service
from app.jobs.config import job_settings
from app.jobs.schemas import UploadedFile
from app.models import Job, TokenScope
from app.settings import Settings
from ml.core.protocol.messages import FENCE_HEADER, MAX_RESULT_CHUNK_BYTES


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"


def _check_worker(principal: Principal) -> Principal:
    if principal.via != "token":
        raise Forbidden("the worker protocol takes a bearer token, not a browser session")
    if principal.token_scope is TokenScope.WORKER:
        return principal
    raise Forbidden(
        "the worker protocol takes a worker token (thresher tokens create --scope worker), "
        "not an API token"
    )


async def require_worker(principal: CurrentPrincipal) -> Principal:
    return _check_worker(principal)


WorkerDep = Annotated[Principal, Depends(require_worker)]


def authenticated_worker(request: Request) -> Principal:
    """Like ``WorkerDep``, in a short transaction of its own: for routes that then stream a
    large body, which must not happen inside a transaction (on SQLite it holds the write lock)."""
    with transaction(request.app.state.session_factory, read_only=True) as session:
        principal = optional_principal(request, session)
        if principal is None:
            raise NotAuthenticated("send the worker token as 'Authorization: Bearer <token>'")
        return _check_worker(principal)


StreamingWorkerDep = Annotated[Principal, Depends(authenticated_worker)]
FenceHeader = Annotated[int, Header(alias=FENCE_HEADER)]


def held_lease(
    request: Request, principal: StreamingWorkerDep, job_id: int, fence: FenceHeader
) -> Job:
    """The job, if the caller's lease ``fence`` holds it: checked before an upload's body is
    read, so a stale or foreign lease gets its 409 without sending a byte. For artifacts, the
    declared size is checked against the job's quota too."""
    config = job_settings(request)
    with transaction(request.app.state.session_factory, read_only=True) as session:
        job = worker_service.check_lease(
            session, job_id=job_id, fence=fence, token_id=principal.token_id
        )
        name = request.path_params.get("name")
        declared = _content_length(request)
        if name is not None and declared is not None:
            uploads.check_artifact_quota(
                session, job=job, name=str(name), size=declared, config=config
            )
    return job


HeldLease = Annotated[Job, Depends(held_lease)]


def job_or_404(job_id: int, session: SessionDep, principal: EngineerDep) -> Job:
    """The job in the path, if the caller may see it (see the module's docstring)."""
    job = service.get_job(session, job_id)
    if job.dataset_id is not None and not access.can_see(session, principal, job.dataset_id):
        raise NotFound(f"no job {job_id}")
    return job


def visible_job_datasets(
    session: SessionDep, principal: EngineerDep, dataset_id: int | None = None
) -> frozenset[int] | None:
    """What a job list may show: jobs on ``dataset_id`` when the query names one (404 if the
    caller may not see it), else jobs on no dataset or on these datasets; None: every job."""
    if dataset_id is not None:
        access.check_can_see(session, principal, dataset_id)
        return frozenset({dataset_id})
    return access.visible_dataset_ids(session, principal)


JobDatasetsDep = Annotated[frozenset[int] | None, Depends(visible_job_datasets)]


JobDep = Annotated[Job, Depends(job_or_404)]


def data_dir(request: Request) -> Path:
    settings: Settings = request.app.state.settings
    return settings.data_dir


DataDir = Annotated[Path, Depends(data_dir)]


def _content_length(request: Request) -> int | None:
    declared = request.headers.get("content-length")
    return int(declared) if declared is not None and declared.isdigit() else None


def _declared_length(request: Request, limit: int) -> None:
    declared = _content_length(request)
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"the body has {declared} bytes; the limit is {limit}")


async def small_body(request: Request) -> bytes:
    """The request body, in memory, up to the result chunk limit."""
    _declared_length(request, MAX_RESULT_CHUNK_BYTES)
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > MAX_RESULT_CHUNK_BYTES:
            raise PayloadTooLarge(f"the body is over the limit of {MAX_RESULT_CHUNK_BYTES} bytes")
        parts.append(part)
    return b"".join(parts)


SmallBody = Annotated[bytes, Depends(small_body)]


async def _file_body(request: Request) -> UploadedFile:
    """The request body streamed to a temporary file under the data directory, hashed on the
    way. The route moves the file into place or it is removed after the response."""
    limit = job_settings(request).max_artifact_bytes
    _declared_length(request, limit)
    settings: Settings = request.app.state.settings
    directory = settings.data_dir / uploads.UPLOAD_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{uuid.uuid4().hex}.part"
    digest = hashlib.sha256()
    size = 0
    handle = await run_in_threadpool(path.open, "wb")
    try:
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise PayloadTooLarge(f"the file is over the limit of {limit} bytes")
            digest.update(part)
            await run_in_threadpool(handle.write, part)
    except BaseException:
        handle.close()
        path.unlink(missing_ok=True)
        raise
    handle.close()
    return UploadedFile(path=path, sha256=digest.hexdigest(), byte_size=size)


async def uploaded_file(request: Request) -> AsyncIterator[UploadedFile]:
    """The request body streamed to a temporary file (see ``_file_body``); the file is gone
    after the response, whatever happened."""
    upload = await _file_body(request)
    try:
        yield upload
    finally:
        upload.path.unlink(missing_ok=True)


FileBody = Annotated[UploadedFile, Depends(uploaded_file)]
