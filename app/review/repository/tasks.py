"""Queries for queueing review tasks (and the lookups that check a batch), and the pipeline's
view of the tasks its rounds queued, which also withdraws those it no longer needs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from app.datasets.repository import usable_sample
from app.db import chunks
from app.models import LabelClass, ReviewDecision, ReviewTask, Sample, TaskKind, TaskState
from app.review.repository.tables import current_decision_ids, dialect

_T = ReviewTask
_D = ReviewDecision


# --- lookups ------------------------------------------------------------------------------------


def existing_sample_ids(session: Session, dataset_id: int, ids: Collection[int]) -> set[int]:
    found: set[int] = set()
    for part in chunks(sorted(ids)):
        found.update(
            session.scalars(
                select(Sample.id).where(Sample.dataset_id == dataset_id, Sample.id.in_(part))
            )
        )
    return found


def existing_class_ids(session: Session, dataset_id: int, ids: Collection[int]) -> set[int]:
    found: set[int] = set()
    for part in chunks(sorted(ids)):
        found.update(
            session.scalars(
                select(LabelClass.id).where(
                    LabelClass.dataset_id == dataset_id, LabelClass.id.in_(part)
                )
            )
        )
    return found


def usable_sample_ids(session: Session, dataset_id: int) -> list[int]:
    """Every decodable, present sample of the dataset, in id order."""
    return list(
        session.scalars(
            select(Sample.id)
            .where(Sample.dataset_id == dataset_id, usable_sample())
            .order_by(Sample.id)
        )
    )


# --- creating tasks -----------------------------------------------------------------------------


def insert_tasks(session: Session, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Inserts tasks, skipping any already queued for the same (kind, subject, source) or the
    same origin; returns the ids of the rows inserted."""
    if not rows:
        return []
    engine = dialect(session)
    statement: Any
    if engine == "postgresql":
        statement = postgresql.insert(_T).on_conflict_do_nothing()
    elif engine == "sqlite":
        statement = sqlite.insert(_T).on_conflict_do_nothing()
    else:  # pragma: no cover - the two supported engines are above
        raise NotImplementedError(engine)
    ids: list[int] = []
    for part in chunks(rows, 1_000):
        ids.extend(session.scalars(statement.returning(_T.id), list(part)))
    return ids


def done_tasks_without_second_opinion(
    session: Session, dataset_id: int, kind: TaskKind
) -> list[tuple[int, int]]:
    """(task id, id of its current decider) of every decided first-opinion task that has no
    second-opinion task yet and whose decision stands (not undone)."""
    second = aliased(ReviewTask)
    current = current_decision_ids(by=_D.task_id).subquery()
    rows = session.execute(
        select(_T.id, _D.user_id)
        .join(_D, _D.task_id == _T.id)
        .join(current, current.c.id == _D.id)
        .where(
            _T.dataset_id == dataset_id,
            _T.kind == kind,
            _T.state == TaskState.DONE,
            _T.origin_task_id.is_(None),
            ~exists().where(second.origin_task_id == _T.id),
        )
        .order_by(_T.id)
    )
    return [(task_id, user_id) for task_id, user_id in rows]


def task_copies(session: Session, task_ids: Collection[int]) -> list[dict[str, Any]]:
    """The columns a second-opinion copy takes from each task."""
    result: list[dict[str, Any]] = []
    for part in chunks(sorted(task_ids)):
        rows = session.execute(
            select(
                _T.id,
                _T.dataset_id,
                _T.kind,
                _T.sample_id,
                _T.class_id,
                _T.priority,
                _T.score,
                _T.source,
                _T.reason,
                _T.suggestions,
            ).where(_T.id.in_(part))
        )
        result.extend(row._asdict() for row in rows)
    return result


# --- the pipeline's rounds ----------------------------------------------------------------------


class TaskStub(NamedTuple):
    id: int
    sample_id: int | None
    class_id: int | None
    state: TaskState


def tasks_of_source(session: Session, dataset_id: int, source: str) -> list[TaskStub]:
    """The first-opinion tasks a round queued (its ``source``), by id."""
    rows = session.execute(
        select(ReviewTask.id, ReviewTask.sample_id, ReviewTask.class_id, ReviewTask.state)
        .where(
            ReviewTask.dataset_id == dataset_id,
            ReviewTask.source == source,
            ReviewTask.origin_task_id.is_(None),
        )
        .order_by(ReviewTask.id)
    )
    return [TaskStub._make(row) for row in rows]


def task_state_counts(session: Session, dataset_id: int, source: str) -> dict[TaskState, int]:
    rows = session.execute(
        select(ReviewTask.state, func.count())
        .where(ReviewTask.dataset_id == dataset_id, ReviewTask.source == source)
        .group_by(ReviewTask.state)
    )
    return {state: int(n) for state, n in rows}


def open_task_samples(session: Session, dataset_id: int, kinds: Collection[TaskKind]) -> set[int]:
    """Samples with a task of one of ``kinds`` waiting or leased."""
    query = select(func.distinct(ReviewTask.sample_id)).where(
        ReviewTask.dataset_id == dataset_id,
        ReviewTask.kind.in_(list(kinds)),
        ReviewTask.state.in_([TaskState.PENDING, TaskState.LEASED]),
        ReviewTask.sample_id.is_not(None),
    )
    return {int(sid) for sid in session.scalars(query)}


def open_class_tasks(session: Session, dataset_id: int) -> set[int]:
    """Classes with a class_check task waiting or leased."""
    query = select(func.distinct(ReviewTask.class_id)).where(
        ReviewTask.dataset_id == dataset_id,
        ReviewTask.kind == TaskKind.CLASS_CHECK,
        ReviewTask.state.in_([TaskState.PENDING, TaskState.LEASED]),
        ReviewTask.class_id.is_not(None),
    )
    return {int(cid) for cid in session.scalars(query)}


def cancel_pending_tasks(
    session: Session,
    dataset_id: int,
    *,
    kinds: Collection[TaskKind],
    sample_ids: Collection[int] | None = None,
    source: str | None = None,
) -> int:
    """Withdraws first-opinion tasks nobody holds (pending ones) of ``kinds``: of these
    samples, or queued by ``source``. Returns how many."""
    conditions: list[ColumnElement[bool]] = [
        ReviewTask.dataset_id == dataset_id,
        ReviewTask.kind.in_(list(kinds)),
        ReviewTask.state == TaskState.PENDING,
        ReviewTask.origin_task_id.is_(None),  # second opinions are asked on purpose
    ]
    if source is not None:
        conditions.append(ReviewTask.source == source)
    total = 0
    parts: list[Sequence[int] | None] = (
        list(chunks(sorted(sample_ids))) if sample_ids is not None else [None]
    )
    for part in parts:
        where = list(conditions)
        if part is not None:
            if not part:
                continue
            where.append(ReviewTask.sample_id.in_(part))
        result = session.execute(update(ReviewTask).where(*where).values(state=TaskState.CANCELLED))
        total += int(result.rowcount)  # type: ignore[attr-defined]
    return total
