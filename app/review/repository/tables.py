"""The review tables as Core handles, the rows the queries hand back, and the pieces of SQL
every query module shares: the engine's dialect, which decisions stand. (Id lists are cut
into ``IN`` lists by :func:`app.db.chunks`.)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import ColumnElement, Select, Table, and_, exists, func, select
from sqlalchemy.orm import Session, aliased

from app.models import Base, ReviewDecision, ReviewTask, Sample, TaskKind, TaskState, Verdict


def cast_table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


TASKS = cast_table(ReviewTask)
DECISIONS = cast_table(ReviewDecision)
SAMPLE_ROWS = cast_table(Sample)
_t = TASKS.c
_d = DECISIONS.c
_D = ReviewDecision

DECISION_COLUMNS = (
    _d.id,
    _d.task_id,
    _d.kind,
    _d.sample_id,
    _d.class_id,
    _d.user_id,
    _d.verdict,
    _d.seconds,
    _d.idempotency_key,
    _d.supersedes_id,
    _d.created_at,
)


class TaskRow(NamedTuple):
    """A task's columns as a lease hands them out, with its sample's given class and SHA-256."""

    id: int
    dataset_id: int
    kind: TaskKind
    sample_id: int | None
    class_id: int | None
    priority: float
    score: float | None
    source: str
    reason: str
    suggestions: list[list[float]] | None
    lease_version: int
    lease_expires_at: datetime | None
    given_class_id: int | None
    sample_sha256: str | None


class LockedTask(NamedTuple):
    """What a decision needs to know about its task, read under a row lock."""

    id: int
    dataset_id: int
    kind: TaskKind
    sample_id: int | None
    class_id: int | None
    state: TaskState
    lease_owner_id: int | None
    lease_version: int
    given_class_id: int | None


def dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def not_withdrawn() -> ColumnElement[bool]:
    undo = aliased(ReviewDecision)
    return and_(_D.verdict != Verdict.UNDO, ~exists().where(undo.supersedes_id == _D.id))


def current_decision_ids(*, by: Any) -> Select[int]:
    """Per value of ``by`` (a sample or a task), the id of its latest standing decision."""
    return select(func.max(_D.id).label("id")).where(not_withdrawn()).group_by(by)
