"""Decision queries: lock a batch's tasks, insert decisions, mark tasks done, and look up the
decisions an undo or a retried request needs.

On PostgreSQL a decision locks its tasks with ``FOR UPDATE`` (in id order, so two batches never
deadlock); on SQLite every transaction already holds the write lock (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, insert, select, update
from sqlalchemy.orm import Session

from app.db import chunks
from app.models import ReviewDecision, TaskState
from app.review.records import DecisionRecord
from app.review.repository.tables import (
    DECISION_COLUMNS,
    DECISIONS,
    SAMPLE_ROWS,
    TASKS,
    LockedTask,
    current_decision_ids,
)

_D = ReviewDecision
_t = TASKS.c
_d = DECISIONS.c


_PRIOR = DECISIONS.alias("prior")

_LOCK = (
    select(
        _t.id,
        _t.dataset_id,
        _t.kind,
        _t.sample_id,
        _t.class_id,
        _t.state,
        _t.lease_owner_id,
        _t.lease_version,
        SAMPLE_ROWS.c.class_id,
        *(_PRIOR.c[column.key] for column in DECISION_COLUMNS),
    )
    .select_from(
        TASKS.outerjoin(SAMPLE_ROWS, SAMPLE_ROWS.c.id == _t.sample_id).outerjoin(
            _PRIOR,
            and_(
                _PRIOR.c.task_id == _t.id,
                _PRIOR.c.user_id == bindparam("p_user"),
                _PRIOR.c.idempotency_key.in_(bindparam("p_keys", expanding=True)),
            ),
        )
    )
    .where(_t.id.in_(bindparam("p_ids", expanding=True)))
    .order_by(_t.id)
    .with_for_update(of=TASKS)
)

_LOCKED_WIDTH = len(LockedTask._fields)

_BY_KEY = select(*DECISION_COLUMNS).where(
    _d.user_id == bindparam("p_user"), _d.idempotency_key.in_(bindparam("p_keys", expanding=True))
)

_INSERT_DECISIONS = insert(DECISIONS).returning(*DECISION_COLUMNS, sort_by_parameter_order=True)

_MARK_DONE = (
    update(TASKS)
    .where(_t.id.in_(bindparam("p_ids", expanding=True)))
    .values(state=TaskState.DONE, done_at=bindparam("p_now"))
)


def lock_tasks(
    session: Session, task_ids: Collection[int], *, user_id: int, keys: Collection[str]
) -> tuple[dict[int, LockedTask], dict[str, DecisionRecord]]:
    """The tasks, each with its sample's given class, row-locked (in id order) until commit;
    and, in the same statement, this user's decisions on them made with any of ``keys``.

    Those decisions are read as of the statement's start: a concurrent decision that
    committed while this one waited for a row lock is not among them (``decisions_by_key``
    finds it).
    """
    tasks: dict[int, LockedTask] = {}
    stored: dict[str, DecisionRecord] = {}
    for part in chunks(sorted(task_ids)):
        params = {"p_ids": list(part), "p_user": user_id, "p_keys": list(keys)}
        for row in session.execute(_LOCK, params):
            tasks[row[0]] = LockedTask._make(row[:_LOCKED_WIDTH])
            if row[_LOCKED_WIDTH] is not None:
                prior = DecisionRecord._make(row[_LOCKED_WIDTH:])
                stored[prior.idempotency_key] = prior
    return tasks, stored


def decisions_by_key(
    session: Session, user_id: int, keys: Collection[str]
) -> dict[str, DecisionRecord]:
    if not keys:
        return {}
    rows = session.execute(_BY_KEY, {"p_user": user_id, "p_keys": list(keys)})
    return {row.idempotency_key: DecisionRecord._make(row) for row in rows}


def insert_decisions(session: Session, rows: Sequence[Mapping[str, Any]]) -> list[DecisionRecord]:
    """Inserts decisions in one statement; returns them in the order given."""
    if not rows:
        return []
    result = session.execute(_INSERT_DECISIONS, list(rows))
    return [DecisionRecord._make(row) for row in result]


def mark_done(session: Session, task_ids: Collection[int], now: datetime) -> None:
    session.execute(_MARK_DONE, {"p_ids": list(task_ids), "p_now": now})


def get_decision(session: Session, decision_id: int) -> DecisionRecord | None:
    row = session.execute(select(*DECISION_COLUMNS).where(_D.id == decision_id)).first()
    return DecisionRecord._make(row) if row else None


def superseding_decision(session: Session, decision_id: int) -> int | None:
    return session.scalar(select(_D.id).where(_D.supersedes_id == decision_id))


def current_decision_of_task(session: Session, task_id: int) -> int | None:
    """The id of the task's standing decision (the latest that is not an undo nor undone)."""
    return session.scalar(current_decision_ids(by=_D.task_id).where(_D.task_id == task_id))
