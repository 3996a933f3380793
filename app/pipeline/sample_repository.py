"""Queries of the pipeline's samples and classes: their state rows (created as samples are
imported, read as :class:`SampleState`), updated in bulk (executemany, never row by row), and
counted by status, class and verdict."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.orm import Session

from app.datasets.repository import usable_sample
from app.db import chunks
from app.models import (
    ClassState,
    EventKind,
    LabelClass,
    PipelineClass,
    PipelineEvent,
    PipelineSample,
    ReviewTask,
    Sample,
    SampleStatus,
    TaskKind,
    TaskState,
    Verdict,
)


def _usable() -> ColumnElement[bool]:
    return and_(usable_sample(), Sample.sha256.is_not(None))


def init_samples(session: Session, dataset_id: int, now: datetime) -> int:
    """Adds a state row for every usable sample of the dataset that has none (a copy of
    another sample starts as ``duplicate``); returns how many were added."""
    known = exists().where(PipelineSample.sample_id == Sample.id)
    status = case(
        (Sample.duplicate_of_id.is_(None), literal(SampleStatus.CANDIDATE.value)),
        else_=literal(SampleStatus.DUPLICATE.value),
    )
    source = select(
        Sample.id,
        Sample.dataset_id,
        status,
        status,
        Sample.class_id,
        Sample.class_id,
        literal(now, PipelineSample.updated_at.type),
    ).where(Sample.dataset_id == dataset_id, _usable(), ~known)
    result = session.execute(
        insert(PipelineSample).from_select(
            [
                "sample_id",
                "dataset_id",
                "status",
                "model_status",
                "given_class_id",
                "label_class_id",
                "updated_at",
            ],
            source,
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def new_duplicates(session: Session, dataset_id: int) -> list[tuple[int, int, int]]:
    """(sample id, original id, class id) of duplicate samples with no duplicate event yet."""
    noted = exists().where(
        PipelineEvent.sample_id == PipelineSample.sample_id,
        PipelineEvent.kind == EventKind.DUPLICATE,
    )
    rows = session.execute(
        select(PipelineSample.sample_id, Sample.duplicate_of_id, PipelineSample.given_class_id)
        .join(Sample, Sample.id == PipelineSample.sample_id)
        .where(
            PipelineSample.dataset_id == dataset_id,
            PipelineSample.status == SampleStatus.DUPLICATE,
            ~noted,
        )
    )
    return [(int(a), int(b or 0), int(c)) for a, b, c in rows]


def init_classes(session: Session, dataset_id: int, now: datetime) -> None:
    known = exists().where(PipelineClass.class_id == LabelClass.id)
    source = select(
        LabelClass.id,
        LabelClass.dataset_id,
        literal(ClassState.ACTIVE.value),
        literal(now, PipelineClass.updated_at.type),
    ).where(LabelClass.dataset_id == dataset_id, ~known)
    session.execute(
        insert(PipelineClass).from_select(["class_id", "dataset_id", "state", "updated_at"], source)
    )


class SampleState(NamedTuple):
    sample_id: int
    status: SampleStatus
    model_status: SampleStatus
    given_class_id: int
    label_class_id: int
    human_verdict: Verdict | None
    decision_id: int | None


_STATE_COLUMNS = (
    PipelineSample.sample_id,
    PipelineSample.status,
    PipelineSample.model_status,
    PipelineSample.given_class_id,
    PipelineSample.label_class_id,
    PipelineSample.human_verdict,
    PipelineSample.decision_id,
)


def sample_states(session: Session, sample_ids: Collection[int]) -> dict[int, SampleState]:
    result: dict[int, SampleState] = {}
    for part in chunks(sorted(sample_ids)):
        rows = session.execute(select(*_STATE_COLUMNS).where(PipelineSample.sample_id.in_(part)))
        result.update({row[0]: SampleState._make(row) for row in rows})
    return result


def states_where(
    session: Session,
    dataset_id: int,
    *,
    statuses: Collection[SampleStatus] | None = None,
    label_class_ids: Collection[int] | None = None,
    unverified: bool = False,
    modes: tuple[bool, str] | None = None,
) -> list[SampleState]:
    """State rows of present, usable samples, by sample id: with one of ``statuses``, labelled
    with one of ``label_class_ids``, without a human verdict (``unverified``), or whose image
    mode is (``(True, "RGB")``) or is not (``(False, "RGB")``) the given one."""
    query = (
        select(*_STATE_COLUMNS)
        .join(Sample, Sample.id == PipelineSample.sample_id)
        .where(PipelineSample.dataset_id == dataset_id, _usable())
    )
    if statuses is not None:
        query = query.where(PipelineSample.status.in_(list(statuses)))
    if label_class_ids is not None:
        query = query.where(PipelineSample.label_class_id.in_(list(label_class_ids)))
    if unverified:
        query = query.where(PipelineSample.decision_id.is_(None))
    if modes is not None:
        wanted, mode = modes
        query = query.where(Sample.mode == mode if wanted else Sample.mode != mode)
    return [SampleState._make(row) for row in session.execute(query.order_by(Sample.id))]


def label_ranks(session: Session, sample_ids: Collection[int]) -> dict[int, int | None]:
    """The rank of each sample's label in its last prediction (-1: not among the recorded)."""
    result: dict[int, int | None] = {}
    for part in chunks(sorted(sample_ids)):
        rows = session.execute(
            select(PipelineSample.sample_id, PipelineSample.label_rank).where(
                PipelineSample.sample_id.in_(part)
            )
        )
        result.update({int(sid): rank for sid, rank in rows})
    return result


def human_sample_pool(session: Session, dataset_id: int) -> list[int]:
    """Rejected samples no human has judged the label of, with no label_check task open."""
    open_task = exists().where(
        ReviewTask.sample_id == PipelineSample.sample_id,
        ReviewTask.kind == TaskKind.LABEL_CHECK,
        ReviewTask.state.in_([TaskState.PENDING, TaskState.LEASED]),
    )
    query = (
        select(PipelineSample.sample_id)
        .join(Sample, Sample.id == PipelineSample.sample_id)
        .where(
            PipelineSample.dataset_id == dataset_id,
            _usable(),
            PipelineSample.status == SampleStatus.REJECTED,
            (PipelineSample.human_verdict.is_(None))
            | (PipelineSample.human_verdict == Verdict.NOT_JUNK),
            ~open_task,
        )
        .order_by(PipelineSample.sample_id)
    )
    return list(session.scalars(query))


def update_samples(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Updates state rows by ``sample_id`` (each mapping names the columns it sets; mappings
    with the same keys are sent together)."""
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    for group in groups.values():
        for part in chunks(group, 2_000):
            session.execute(update(PipelineSample), list(part))


def dataset_sample_count(session: Session, dataset_id: int) -> int:
    """Every sample row of the dataset: usable, unusable and missing files."""
    return int(session.scalar(select(func.count()).where(Sample.dataset_id == dataset_id)) or 0)


def verdict_counts(session: Session, dataset_id: int) -> dict[Verdict, int]:
    """Samples per applied human verdict."""
    rows = session.execute(
        select(PipelineSample.human_verdict, func.count())
        .where(PipelineSample.dataset_id == dataset_id, PipelineSample.human_verdict.is_not(None))
        .group_by(PipelineSample.human_verdict)
    )
    return {verdict: int(n) for verdict, n in rows if verdict is not None}


def status_counts(session: Session, dataset_id: int) -> dict[SampleStatus, int]:
    rows = session.execute(
        select(PipelineSample.status, func.count())
        .where(PipelineSample.dataset_id == dataset_id)
        .group_by(PipelineSample.status)
    )
    return {status: int(count) for status, count in rows}


def class_counts(
    session: Session,
    dataset_id: int,
    *,
    statuses: Collection[SampleStatus] | None = None,
    by_given: bool = False,
) -> dict[int, int]:
    """Samples per class (their current label, or ``by_given`` their imported one)."""
    column = PipelineSample.given_class_id if by_given else PipelineSample.label_class_id
    query = select(column, func.count()).where(PipelineSample.dataset_id == dataset_id)
    if statuses is not None:
        query = query.where(PipelineSample.status.in_(list(statuses)))
    return {int(cid): int(n) for cid, n in session.execute(query.group_by(column))}


def set_sample_scores(
    session: Session, column: str, values: Sequence[tuple[int, float | None]]
) -> None:
    update_samples(session, [{"sample_id": sid, column: value} for sid, value in values])


def pipeline_classes(session: Session, dataset_id: int) -> dict[int, PipelineClass]:
    query = (
        select(PipelineClass)
        .where(PipelineClass.dataset_id == dataset_id)
        .execution_options(populate_existing=True)
    )
    return {row.class_id: row for row in session.scalars(query)}


def dropped_class_ids(session: Session, dataset_id: int) -> set[int]:
    query = select(PipelineClass.class_id).where(
        PipelineClass.dataset_id == dataset_id, PipelineClass.state == ClassState.DROPPED
    )
    return set(session.scalars(query))


def class_names(session: Session, dataset_id: int) -> dict[int, str]:
    rows = session.execute(
        select(LabelClass.id, LabelClass.name).where(LabelClass.dataset_id == dataset_id)
    )
    return {int(cid): name for cid, name in rows}


def sample_files(session: Session, sample_ids: Collection[int]) -> dict[int, tuple[str, str]]:
    """(path, sha256) of each sample."""
    result: dict[int, tuple[str, str]] = {}
    for part in chunks(sorted(sample_ids)):
        rows = session.execute(
            select(Sample.id, Sample.path, Sample.sha256).where(Sample.id.in_(part))
        )
        result.update({int(sid): (path, sha or "") for sid, path, sha in rows})
    return result
