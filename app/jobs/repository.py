"""Every query on jobs, their metrics, artifacts and result ledger (bulk results: ``ingest``)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, or_, select, true
from sqlalchemy.orm import Session

from app.models import (
    Job,
    JobArtifact,
    JobMetric,
    JobResult,
    JobResultChunk,
    JobState,
)
from ml.core.protocol.jobs import ArtifactRef, DeviceKind, JobKind


def get_job(session: Session, job_id: int, *, for_update: bool = False) -> Job | None:
    """The job; ``for_update`` row-locks it on PostgreSQL (SQLite locks on BEGIN already)."""
    query = select(Job).where(Job.id == job_id)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


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
    """Newest first; ``visible``: only jobs on no dataset or on one of these."""
    query = select(Job)
    if states:
        query = query.where(Job.state.in_(states))
    if kind is not None:
        query = query.where(Job.kind == kind)
    if dataset_id is not None:
        query = query.where(Job.dataset_id == dataset_id)
    query = query.where(_on_visible(visible))
    if before_id is not None:
        query = query.where(Job.id < before_id)
    return list(session.scalars(query.order_by(Job.id.desc()).limit(limit)))


def _on_visible(visible: Collection[int] | None) -> ColumnElement[bool]:
    """Jobs on no dataset or on one of ``visible`` (None: every job)."""
    if visible is None:
        return true()
    return or_(Job.dataset_id.is_(None), Job.dataset_id.in_(sorted(visible)))


def state_counts(session: Session, visible: Collection[int] | None = None) -> dict[JobState, int]:
    """Jobs by state; ``visible``: only those on no dataset or on one of these."""
    query = select(Job.state, func.count()).where(_on_visible(visible)).group_by(Job.state)
    return {state: count for state, count in session.execute(query)}


def next_leasable(
    session: Session, *, kinds: Sequence[JobKind], device: DeviceKind, now: datetime
) -> Job | None:
    """The queued job to lease next (highest priority, then oldest), row-locked and skipped by
    concurrent leases on PostgreSQL (``FOR UPDATE SKIP LOCKED``)."""
    query = (
        select(Job)
        .where(
            Job.state == JobState.QUEUED,
            Job.kind.in_(kinds),
            Job.device.in_((DeviceKind.ANY, device)),
            or_(Job.not_before_at.is_(None), Job.not_before_at <= now),
        )
        .order_by(Job.priority.desc(), Job.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return session.scalars(query).first()


def expired_leases(session: Session, *, now: datetime, limit: int = 100) -> list[Job]:
    """Held jobs whose lease ran out, row-locked; rows another transaction holds are skipped."""
    query = (
        select(Job)
        .where(Job.state.in_((JobState.LEASED, JobState.RUNNING)), Job.lease_expires_at < now)
        .order_by(Job.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(query))


# --- metrics ------------------------------------------------------------------------------------


def get_metric(session: Session, job_id: int, fence: int, epoch: int) -> JobMetric | None:
    return session.get(JobMetric, (job_id, fence, epoch))


def list_metrics(session: Session, job_id: int, fence: int) -> list[JobMetric]:
    query = (
        select(JobMetric)
        .where(JobMetric.job_id == job_id, JobMetric.fence == fence)
        .order_by(JobMetric.epoch)
    )
    return list(session.scalars(query))


# --- artifacts ----------------------------------------------------------------------------------


def list_artifacts(session: Session, job_id: int) -> list[JobArtifact]:
    query = select(JobArtifact).where(JobArtifact.job_id == job_id).order_by(JobArtifact.name)
    return list(session.scalars(query))


def get_artifact(session: Session, artifact_id: int) -> JobArtifact | None:
    return session.get(JobArtifact, artifact_id)


def artifact_ref(artifact: JobArtifact) -> ArtifactRef:
    """A stored job file as a job spec names it."""
    return ArtifactRef(
        id=artifact.id,
        job_id=artifact.job_id,
        name=artifact.name,
        sha256=artifact.sha256,
        byte_size=artifact.byte_size,
    )


def get_artifact_by_name(session: Session, job_id: int, name: str) -> JobArtifact | None:
    query = select(JobArtifact).where(JobArtifact.job_id == job_id, JobArtifact.name == name)
    return session.scalars(query).one_or_none()


def artifact_bytes(session: Session, job_id: int, *, excluding: str) -> int:
    """The bytes of the job's artifacts, but for the one named ``excluding``."""
    query = select(func.coalesce(func.sum(JobArtifact.byte_size), 0)).where(
        JobArtifact.job_id == job_id, JobArtifact.name != excluding
    )
    return int(session.scalar(query) or 0)


def delete_artifacts(session: Session, job_id: int) -> list[str]:
    """Deletes the job's artifact rows; returns their storage paths (the caller removes files)."""
    paths = list(
        session.scalars(select(JobArtifact.storage_path).where(JobArtifact.job_id == job_id))
    )
    session.execute(delete(JobArtifact).where(JobArtifact.job_id == job_id))
    return paths


# --- results ------------------------------------------------------------------------------------


def get_result_chunk(session: Session, job_id: int, index: int) -> JobResultChunk | None:
    return session.get(JobResultChunk, (job_id, index))


def result_chunk_stats(session: Session, job_id: int) -> tuple[int, int]:
    """(number of chunks, highest chunk index or -1) in the job's ledger."""
    count, highest = session.execute(
        select(func.count(), func.coalesce(func.max(JobResultChunk.index), -1)).where(
            JobResultChunk.job_id == job_id
        )
    ).one()
    return int(count), int(highest)


def count_results(session: Session, job_id: int) -> int:
    return int(session.scalar(select(func.count()).where(JobResult.job_id == job_id)) or 0)


def delete_results(session: Session, job_id: int) -> None:
    session.execute(delete(JobResult).where(JobResult.job_id == job_id))
    session.execute(delete(JobResultChunk).where(JobResultChunk.job_id == job_id))


def delete_chunk_results(session: Session, job_id: int, index: int) -> None:
    session.execute(delete(JobResult).where(JobResult.job_id == job_id, JobResult.chunk == index))


def jobs_of_kind(session: Session, *, kind: JobKind, dataset_id: int, state: JobState) -> list[Job]:
    """Every job of a kind and state for a dataset, newest first."""
    query = select(Job).where(Job.kind == kind, Job.dataset_id == dataset_id, Job.state == state)
    return list(session.scalars(query.order_by(Job.id.desc())))


def specs_held_by_token(session: Session, token_id: int | None) -> list[dict[str, Any]]:
    """The specs of the jobs the worker token ``token_id`` holds a lease on now."""
    if token_id is None:
        return []
    query = select(Job.spec).where(
        Job.lease_token_id == token_id, Job.state.in_([JobState.LEASED, JobState.RUNNING])
    )
    return list(session.scalars(query))


def datasets_held_by_token(session: Session, token_id: int | None) -> list[int]:
    """The datasets of the jobs the worker token ``token_id`` holds a lease on now."""
    if token_id is None:
        return []
    query = select(Job.dataset_id).where(
        Job.lease_token_id == token_id,
        Job.state.in_([JobState.LEASED, JobState.RUNNING]),
        Job.dataset_id.is_not(None),
    )
    return [dataset_id for dataset_id in session.scalars(query.distinct()) if dataset_id]
