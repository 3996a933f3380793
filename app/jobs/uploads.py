"""What workers upload: result chunks, checked against the job's result set, and artifact files
(checkpoints), named by their content and kept within a per-job quota. Every upload is refused
unless the worker's lease still holds the job (:func:`app.jobs.worker_service.held_job`).
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from app.errors import AppError
from app.jobs import ingest, manifests, repository
from app.jobs.config import JobSettings
from app.jobs.schemas import UploadedFile
from app.jobs.worker_service import held_job
from app.logging import get_logger
from app.models import Job, JobArtifact, JobResultChunk
from ml.core.protocol.bundle_format import BundleError
from ml.core.protocol.bundles import ResultChunk, decode_results
from ml.core.protocol.jobs import parse_spec, result_set
from ml.core.protocol.messages import ResultsStored

log = get_logger(__name__)

ARTIFACT_DIR = "jobs/artifacts"
UPLOAD_DIR = "jobs/uploads"
MAX_RESULT_CHUNK_INDEX = 1_000_000
_ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class QuotaExceeded(AppError):
    status_code = 413
    code = "quota_exceeded"


class MalformedUpload(AppError):
    status_code = 400
    code = "malformed_upload"


def store_result_chunk(
    session: Session,
    *,
    job_id: int,
    fence: int,
    token_id: int | None,
    index: int,
    data: bytes,
    data_dir: Path,
) -> ResultsStored:
    """Validates and stores one chunk of results; the same chunk again is a no-op, a different
    chunk under the same index replaces it.

    Raises:
        JobLeaseLost: the fence is stale (nothing is read or written).
        MalformedUpload: truncated, corrupt or invalid bundle, or samples outside the job's set.
    """
    job = held_job(session, job_id, fence, token_id)
    if not 0 <= index < MAX_RESULT_CHUNK_INDEX:
        raise MalformedUpload(f"chunk index {index} is out of range")
    try:
        chunk = decode_results(data)
    except BundleError as error:
        raise MalformedUpload(
            f"result chunk {index} of job {job_id} was not stored: {error}"
        ) from error
    _check_result_samples(job, chunk, data_dir)
    digest = hashlib.sha256(data).hexdigest()
    existing = repository.get_result_chunk(session, job.id, index)
    if existing is not None and existing.sha256 == digest:
        return ResultsStored(chunk=index, rows=existing.rows, duplicate=True)
    if existing is not None:
        repository.delete_chunk_results(session, job.id, index)
        existing.sha256, existing.rows, existing.fence = digest, len(chunk), fence
    else:
        session.add(
            JobResultChunk(job_id=job.id, index=index, fence=fence, sha256=digest, rows=len(chunk))
        )
    session.flush()
    ingest.write_results(session, job_id=job.id, chunk_index=index, chunk=chunk)
    log.info("jobs.results.stored", job_id=job.id, chunk=index, rows=len(chunk))
    return ResultsStored(chunk=index, rows=len(chunk), duplicate=False)


def _check_result_samples(job: Job, chunk: ResultChunk, data_dir: Path) -> None:
    spec = parse_spec(job.spec)
    target = result_set(spec)
    if target is None:
        raise MalformedUpload(f"{job.kind.value} jobs report no per-sample results")
    manifest, fold = target
    allowed = manifests.result_sample_ids(data_dir, manifest.sha256, fold)
    found = np.searchsorted(allowed, chunk.sample_id)
    inside = found < allowed.shape[0]
    inside[inside] = allowed[found[inside]] == chunk.sample_id[inside]
    if not inside.all():
        outside = chunk.sample_id[~inside]
        raise MalformedUpload(
            f"{outside.size} samples are not in the job's result set, e.g. {outside[:5].tolist()}"
        )
    top_k = getattr(spec, "top_k", None)
    if chunk.k and top_k is not None and chunk.k != min(top_k, manifest.num_classes):
        raise MalformedUpload(f"top-k results with k={chunk.k}; the job asked for k={top_k}")


def store_artifact(
    session: Session,
    *,
    job_id: int,
    fence: int,
    token_id: int | None,
    name: str,
    upload: UploadedFile,
    claimed_sha256: str | None,
    data_dir: Path,
    config: JobSettings,
) -> JobArtifact:
    """Moves an uploaded file into the job's artifacts (replacing one of the same name).

    Raises:
        JobLeaseLost: stale fence. MalformedUpload: bad name, or the bytes do not match the
        SHA-256 the worker sent (a truncated or corrupted upload). QuotaExceeded: the job's
        artifacts would exceed ``artifact_quota_bytes``.
    """
    job = held_job(session, job_id, fence, token_id)
    if not _ARTIFACT_NAME.fullmatch(name):
        raise MalformedUpload(f"artifact name {name!r}: use letters, digits, '.', '_' and '-'")
    if claimed_sha256 is not None and claimed_sha256.lower() != upload.sha256:
        raise MalformedUpload(
            f"artifact {name!r} arrived with SHA-256 {upload.sha256} and {upload.byte_size} "
            f"bytes, the worker sent {claimed_sha256.lower()}: not stored"
        )
    check_artifact_quota(session, job=job, name=name, size=upload.byte_size, config=config)
    job_dir = data_dir / ARTIFACT_DIR / str(job.id)
    # Named by content too: a rolled-back transaction can leave a stray file, never a row
    # pointing at other bytes than its hash.
    relative = Path(ARTIFACT_DIR) / str(job.id) / str(fence) / f"{upload.sha256[:16]}-{name}"
    target = data_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    upload.path.replace(target)
    for stale in job_dir.iterdir():
        if stale.is_dir() and stale.name.isdigit() and int(stale.name) < fence:
            shutil.rmtree(stale, ignore_errors=True)
    artifact = repository.get_artifact_by_name(session, job.id, name)
    if artifact is None:
        artifact = JobArtifact(job_id=job.id, name=name)
        session.add(artifact)
    artifact.fence = fence
    artifact.media_type = (
        "application/json" if name.endswith(".json") else "application/octet-stream"
    )
    artifact.byte_size = upload.byte_size
    artifact.sha256 = upload.sha256
    artifact.storage_path = relative.as_posix()
    session.flush()
    log.info("jobs.artifact.stored", job_id=job.id, name=name, bytes=upload.byte_size)
    return artifact


def check_artifact_quota(
    session: Session, *, job: Job, name: str, size: int, config: JobSettings
) -> None:
    """QuotaExceeded unless an artifact of ``size`` bytes named ``name`` (replacing one of the
    same name) keeps the job's artifacts within ``artifact_quota_bytes``."""
    others = repository.artifact_bytes(session, job.id, excluding=name)
    if others + size > config.artifact_quota_bytes:
        raise QuotaExceeded(
            f"job {job.id} may store {config.artifact_quota_bytes} bytes of artifacts; "
            f"it has {others} and this one has {size}"
        )
