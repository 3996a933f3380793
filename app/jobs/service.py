"""Jobs for engineers and the pipeline: queue, list, inspect, cancel and retry jobs; read their
results, artifacts and models.

An engineer's request becomes a spec in :mod:`app.jobs.specs`; the worker protocol's side is
:mod:`app.jobs.worker_service` and :mod:`app.jobs.uploads`; the state machine both sides drive is
:mod:`app.jobs.lifecycle`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session

from app.errors import Invalid, NotFound
from app.jobs import ingest, repository
from app.jobs.config import JobSettings
from app.jobs.lifecycle import IllegalTransition, locked_job, move
from app.jobs.schemas import JobDetail
from app.logging import get_logger
from app.models import Job, JobArtifact, JobState, User, utcnow
from ml.core.protocol.bundles import ResultChunk
from ml.core.protocol.jobs import MODEL_FILES, DeviceKind, JobKind, JobSpec, ModelRef, spec_json

log = get_logger(__name__)

MAX_PAGE = 500


def get_job(session: Session, job_id: int) -> Job:
    job = repository.get_job(session, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def list_jobs(
    session: Session,
    *,
    states: Sequence[JobState] = (),
    kind: JobKind | None = None,
    dataset_id: int | None = None,
    visible: Collection[int] | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[Job]:
    """Newest first; pass the last id as ``before_id`` for the next page. ``visible``: only
    jobs on no dataset or on one of these datasets."""
    return repository.list_jobs(
        session,
        states=states,
        kind=kind,
        dataset_id=dataset_id,
        visible=visible,
        before_id=before_id,
        limit=max(1, min(limit, MAX_PAGE)),
    )


def state_counts(session: Session, visible: Collection[int] | None = None) -> dict[JobState, int]:
    return repository.state_counts(session, visible)


def job_detail(session: Session, job: Job) -> JobDetail:
    chunks, _ = repository.result_chunk_stats(session, job.id)
    return JobDetail(
        job=job,
        metrics=repository.list_metrics(session, job.id, job.fence),
        artifacts=repository.list_artifacts(session, job.id),
        result_rows=repository.count_results(session, job.id),
        result_chunks=chunks,
    )


def create_job(
    session: Session,
    *,
    spec: JobSpec,
    config: JobSettings,
    device: DeviceKind = DeviceKind.ANY,
    priority: int = 0,
    max_attempts: int | None = None,
    dataset_id: int | None = None,
    user: User | None = None,
) -> Job:
    """Queues a job. The pipeline calls this with specs it built; engineers go through
    :func:`app.jobs.specs.create_job_from_request`."""
    job = Job(
        kind=spec.kind,
        state=JobState.QUEUED,
        spec=spec_json(spec),
        device=device,
        priority=priority,
        dataset_id=dataset_id,
        created_by_id=user.id if user else None,
        max_attempts=max_attempts or config.max_attempts,
        attempts=0,
        fence=0,
        log_tail="",
        log_lines=0,
    )
    session.add(job)
    session.flush()
    log.info("jobs.job.created", job_id=job.id, kind=job.kind.value, device=device.value)
    return job


def model_ref(session: Session, job_id: int) -> ModelRef:
    """The model a succeeded training job uploaded (its ``MODEL_FILES`` artifacts).

    Raises:
        Invalid: the job has not succeeded or uploaded no model.
    """
    job = get_job(session, job_id)
    if job.state is not JobState.SUCCEEDED:
        raise Invalid(f"job {job_id} is {job.state.value}: only a succeeded job's model is usable")
    files = [
        repository.artifact_ref(artifact)
        for artifact in repository.list_artifacts(session, job.id)
        if artifact.name in MODEL_FILES
    ]
    if len(files) != len(MODEL_FILES):
        raise Invalid(f"job {job_id} ({job.kind.value}) has no complete model among its artifacts")
    return ModelRef(job_id=job.id, files=files)


def cancel_job(session: Session, *, job_id: int, now: datetime | None = None) -> Job:
    """Cancels a queued job at once; a leased or running one is cancelled when its worker,
    told by its next heartbeat reply, hands it back (or when its lease expires)."""
    now = now or utcnow()
    job = locked_job(session, job_id)
    if job.state is JobState.QUEUED:
        move(job, JobState.CANCELLED, now=now)
    elif job.state.is_held:
        if job.cancel_requested_at is None:
            job.cancel_requested_at = now
            log.info("jobs.job.cancel_requested", job_id=job.id, worker=job.worker)
    elif job.state is not JobState.CANCELLED:
        raise IllegalTransition(f"job {job.id} already {job.state.value}", state=job.state.value)
    return job


def retry_job(session: Session, *, job_id: int, now: datetime | None = None) -> Job:
    """Queues a failed or cancelled job again, with a fresh budget of attempts."""
    now = now or utcnow()
    job = locked_job(session, job_id)
    move(job, JobState.QUEUED, now=now)
    job.attempts = 0
    job.not_before_at = None
    job.cancel_requested_at = None
    return job


def job_results(session: Session, job: Job) -> ResultChunk:
    """The job's stored per-sample results as arrays, by sample id."""
    return ingest.read_results(session, job.id)


def artifact_file(session: Session, data_dir: Path, artifact_id: int) -> tuple[JobArtifact, Path]:
    artifact = repository.get_artifact(session, artifact_id)
    if artifact is None:
        raise NotFound(f"no artifact {artifact_id}")
    path = data_dir / artifact.storage_path
    if not path.is_file():
        raise NotFound(f"artifact {artifact_id}'s file is gone")
    return artifact, path


def artifact_by_name(
    session: Session, data_dir: Path, *, job_id: int, name: str
) -> tuple[JobArtifact, Path]:
    artifact = repository.get_artifact_by_name(session, job_id, name)
    if artifact is None:
        raise NotFound(f"job {job_id} has no artifact {name!r}")
    return artifact_file(session, data_dir, artifact.id)
