"""Queries of the pipeline's events (every change of a sample's or class's status, written in
bulk), and the sample lists and export rows that read them."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    exists,
    func,
    insert,
    select,
)
from sqlalchemy.orm import Session

from app.db import chunks
from app.models import (
    EventKind,
    PipelineEvent,
    PipelineSample,
    Sample,
    SampleStatus,
    Verdict,
)


def event_row(
    dataset_id: int,
    *,
    kind: EventKind,
    now: datetime,
    round_id: int | None = None,
    sample_id: int | None = None,
    class_id: int | None = None,
    from_status: SampleStatus | None = None,
    to_status: SampleStatus | None = None,
    score: float | None = None,
    job_id: int | None = None,
    decision_id: int | None = None,
    detail: str = "",
) -> dict[str, Any]:
    """A row for :func:`insert_events` (``score`` stored as a plain float)."""
    return {
        "dataset_id": dataset_id,
        "round_id": round_id,
        "sample_id": sample_id,
        "class_id": class_id,
        "kind": kind,
        "from_status": from_status,
        "to_status": to_status,
        "score": None if score is None else float(score),
        "job_id": job_id,
        "decision_id": decision_id,
        "detail": detail,
        "created_at": now,
    }


def insert_events(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    for part in chunks(rows, 2_000):
        session.execute(insert(PipelineEvent), list(part))


def sample_events(session: Session, sample_id: int) -> list[PipelineEvent]:
    query = (
        select(PipelineEvent).where(PipelineEvent.sample_id == sample_id).order_by(PipelineEvent.id)
    )
    return list(session.scalars(query))


def class_events(session: Session, dataset_id: int) -> list[PipelineEvent]:
    query = (
        select(PipelineEvent)
        .where(PipelineEvent.dataset_id == dataset_id, PipelineEvent.sample_id.is_(None))
        .order_by(PipelineEvent.id)
    )
    return list(session.scalars(query))


def round_event_counts(session: Session, round_id: int) -> dict[EventKind, int]:
    """A round's sample events per kind: its per-round counts, each traceable to samples."""
    rows = session.execute(
        select(PipelineEvent.kind, func.count())
        .where(PipelineEvent.round_id == round_id, PipelineEvent.sample_id.is_not(None))
        .group_by(PipelineEvent.kind)
    )
    return {kind: int(n) for kind, n in rows}


def ever_event_counts(session: Session, dataset_id: int) -> dict[EventKind, int]:
    """Samples that ever had an event of each kind (each sample counted once per kind)."""
    rows = session.execute(
        select(PipelineEvent.kind, func.count(func.distinct(PipelineEvent.sample_id)))
        .where(PipelineEvent.dataset_id == dataset_id, PipelineEvent.sample_id.is_not(None))
        .group_by(PipelineEvent.kind)
    )
    return {kind: int(n) for kind, n in rows}


class SampleListRow(NamedTuple):
    sample_id: int
    path: str
    status: SampleStatus
    given_class_id: int
    label_class_id: int
    human_verdict: Verdict | None
    decision_id: int | None
    junk_score: float | None
    label_rank: int | None
    cl_issue: bool | None


def list_samples(
    session: Session,
    dataset_id: int,
    *,
    status: SampleStatus | None = None,
    statuses: Collection[SampleStatus] | None = None,
    class_id: int | None = None,
    round_id: int | None = None,
    event: EventKind | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[SampleListRow]:
    """Samples by id: with a status, labelled with a class, or having an event (of a kind, in a
    round); the rows behind every count the reports show."""
    query = (
        select(
            PipelineSample.sample_id,
            Sample.path,
            PipelineSample.status,
            PipelineSample.given_class_id,
            PipelineSample.label_class_id,
            PipelineSample.human_verdict,
            PipelineSample.decision_id,
            PipelineSample.junk_score,
            PipelineSample.label_rank,
            PipelineSample.cl_issue,
        )
        .join(Sample, Sample.id == PipelineSample.sample_id)
        .where(PipelineSample.dataset_id == dataset_id)
    )
    if status is not None:
        query = query.where(PipelineSample.status == status)
    if statuses is not None:
        query = query.where(PipelineSample.status.in_(list(statuses)))
    if class_id is not None:
        query = query.where(PipelineSample.label_class_id == class_id)
    if round_id is not None or event is not None:
        conditions = [PipelineEvent.sample_id == PipelineSample.sample_id]
        if round_id is not None:
            conditions.append(PipelineEvent.round_id == round_id)
        if event is not None:
            conditions.append(PipelineEvent.kind == event)
        query = query.where(exists().where(*conditions))
    if after_id is not None:
        query = query.where(PipelineSample.sample_id > after_id)
    rows = session.execute(query.order_by(PipelineSample.sample_id).limit(limit))
    return [SampleListRow._make(row) for row in rows]


class ExportRow(NamedTuple):
    sample_id: int
    path: str
    given_class_id: int
    error: str | None
    missing: bool
    duplicate_of_id: int | None
    status: SampleStatus | None
    label_class_id: int | None
    human_verdict: Verdict | None
    decision_id: int | None
    junk_score: float | None
    label_rank: int | None
    cl_issue: bool | None
    cl_quality: float | None
    knn_issue: bool | None
    knn_agreement: float | None


def export_rows(session: Session, dataset_id: int) -> list[ExportRow]:
    """Every sample of the dataset (usable or not) with its pipeline state, by path."""
    rows = session.execute(
        select(
            Sample.id,
            Sample.path,
            Sample.class_id,
            Sample.error,
            Sample.missing,
            Sample.duplicate_of_id,
            PipelineSample.status,
            PipelineSample.label_class_id,
            PipelineSample.human_verdict,
            PipelineSample.decision_id,
            PipelineSample.junk_score,
            PipelineSample.label_rank,
            PipelineSample.cl_issue,
            PipelineSample.cl_quality,
            PipelineSample.knn_issue,
            PipelineSample.knn_agreement,
        )
        .outerjoin(PipelineSample, PipelineSample.sample_id == Sample.id)
        .where(Sample.dataset_id == dataset_id)
        .order_by(Sample.path)
    )
    return [
        ExportRow(
            sample_id=int(row[0]),
            path=row[1],
            given_class_id=int(row[2]),
            error=row[3].value if row[3] is not None else None,
            missing=bool(row[4]),
            duplicate_of_id=row[5],
            status=row[6],
            label_class_id=row[7],
            human_verdict=row[8],
            decision_id=row[9],
            junk_score=row[10],
            label_rank=row[11],
            cl_issue=row[12],
            cl_quality=row[13],
            knn_issue=row[14],
            knn_agreement=row[15],
        )
        for row in rows
    ]


def events_by_sample(session: Session, dataset_id: int) -> dict[int, list[PipelineEvent]]:
    query = (
        select(PipelineEvent)
        .where(PipelineEvent.dataset_id == dataset_id, PipelineEvent.sample_id.is_not(None))
        .order_by(PipelineEvent.id)
    )
    result: dict[int, list[PipelineEvent]] = {}
    for event in session.scalars(query):
        assert event.sample_id is not None
        result.setdefault(event.sample_id, []).append(event)
    return result
