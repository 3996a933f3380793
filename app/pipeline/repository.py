"""Queries of the pipeline area: pipelines and their rounds (and :func:`chunks`, how every
query of the area splits a long id list). Samples and classes:
:mod:`~app.pipeline.sample_repository`; events, sample lists and the export's rows:
:mod:`~app.pipeline.event_repository`; which job predicted what for a sample:
:mod:`~app.pipeline.result_repository`.

Pipelines are locked row by row (``FOR UPDATE``; on SQLite every transaction already holds the
write lock from ``BEGIN IMMEDIATE``), so two server processes never advance the same pipeline at
once.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import (
    func,
    select,
)
from sqlalchemy.orm import Session

from app.models import (
    Job,
    Pipeline,
    PipelineRound,
    PipelineRoundJob,
    RoundKind,
    RoundState,
)

# --- pipelines ----------------------------------------------------------------------------------


def get_pipeline(
    session: Session,
    *,
    dataset_id: int | None = None,
    pipeline_id: int | None = None,
    for_update: bool = False,
    skip_locked: bool = False,
) -> Pipeline | None:
    """The pipeline of a dataset (or by id); ``for_update`` row-locks it (``skip_locked``: None
    when another transaction holds it)."""
    query = select(Pipeline)
    if dataset_id is not None:
        query = query.where(Pipeline.dataset_id == dataset_id)
    if pipeline_id is not None:
        query = query.where(Pipeline.id == pipeline_id)
    if for_update:
        query = query.with_for_update(skip_locked=skip_locked)
        # A row the session already holds would be returned as it was: read it again.
        query = query.execution_options(populate_existing=True)
    return session.scalars(query).one_or_none()


def pipeline_ids(session: Session) -> list[int]:
    return list(session.scalars(select(Pipeline.id).order_by(Pipeline.id)))


# --- rounds -------------------------------------------------------------------------------------


def list_rounds(session: Session, pipeline_id: int) -> list[PipelineRound]:
    """Oldest first."""
    query = (
        select(PipelineRound)
        .where(PipelineRound.pipeline_id == pipeline_id)
        .order_by(PipelineRound.id)
        .execution_options(populate_existing=True)
    )
    return list(session.scalars(query))


def get_round(session: Session, round_id: int) -> PipelineRound | None:
    return session.get(PipelineRound, round_id, populate_existing=True)


def round_by_request_key(session: Session, pipeline_id: int, key: str) -> PipelineRound | None:
    query = select(PipelineRound).where(
        PipelineRound.pipeline_id == pipeline_id, PipelineRound.request_key == key
    )
    return session.scalars(query).one_or_none()


def next_round_number(session: Session, pipeline_id: int, kind: RoundKind) -> int:
    highest = session.scalar(
        select(func.max(PipelineRound.number)).where(
            PipelineRound.pipeline_id == pipeline_id, PipelineRound.kind == kind
        )
    )
    return int(highest or 0) + 1


def latest_round(
    session: Session, pipeline_id: int, kinds: Collection[RoundKind], *, done: bool = True
) -> PipelineRound | None:
    query = select(PipelineRound).where(
        PipelineRound.pipeline_id == pipeline_id, PipelineRound.kind.in_(list(kinds))
    )
    if done:
        query = query.where(PipelineRound.state == RoundState.DONE)
    return session.scalars(query.order_by(PipelineRound.id.desc()).limit(1)).first()


def add_round_job(session: Session, *, round_id: int, job_id: int, role: str) -> None:
    session.add(PipelineRoundJob(round_id=round_id, job_id=job_id, role=role))


def round_jobs(session: Session, round_id: int) -> list[tuple[Job, str]]:
    """The round's jobs with their roles, in the order they were queued."""
    rows = session.execute(
        select(Job, PipelineRoundJob.role)
        .join(PipelineRoundJob, PipelineRoundJob.job_id == Job.id)
        .where(PipelineRoundJob.round_id == round_id)
        .order_by(Job.id)
        .execution_options(populate_existing=True)
    )
    return [(job, role) for job, role in rows]


def jobs_of_rounds(
    session: Session, round_ids: Collection[int]
) -> dict[int, list[tuple[Job, str]]]:
    result: dict[int, list[tuple[Job, str]]] = {}
    if not round_ids:
        return result
    rows = session.execute(
        select(PipelineRoundJob.round_id, Job, PipelineRoundJob.role)
        .join(Job, Job.id == PipelineRoundJob.job_id)
        .where(PipelineRoundJob.round_id.in_(list(round_ids)))
        .order_by(Job.id)
    )
    for round_id, job, role in rows:
        result.setdefault(round_id, []).append((job, role))
    return result
