"""Reading decisions: each sample's standing verdict, a sample's history, and what the pipeline
reads to apply verdicts (decisions since its last look, class votes, who decided).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import ColumnElement, exists, func, select
from sqlalchemy.orm import Session, aliased

from app.db import chunks
from app.models import ReviewDecision, ReviewTask, TaskKind, User
from app.pipeline.rules import ClassVote
from app.review.records import DecisionRecord
from app.review.repository.tables import (
    DECISION_COLUMNS,
    current_decision_ids,
    not_withdrawn,
)

_T = ReviewTask
_D = ReviewDecision


def current_decisions(
    session: Session,
    *,
    dataset_id: int | None = None,
    sample_ids: Collection[int] | None = None,
    kinds: Collection[TaskKind] | None = None,
) -> list[DecisionRecord]:
    """Per sample, its latest standing decision (among ``kinds`` when given)."""

    def query(extra: list[ColumnElement[bool]]) -> list[DecisionRecord]:
        latest = current_decision_ids(by=_D.sample_id).where(_D.sample_id.is_not(None), *extra)
        rows = session.execute(select(*DECISION_COLUMNS).where(_D.id.in_(latest.scalar_subquery())))
        return [DecisionRecord._make(row) for row in rows]

    conditions: list[ColumnElement[bool]] = []
    if dataset_id is not None:
        conditions.append(_D.dataset_id == dataset_id)
    if kinds is not None:
        conditions.append(_D.kind.in_(list(kinds)))
    if sample_ids is None:
        return query(conditions)
    result: list[DecisionRecord] = []
    for part in chunks(sorted(sample_ids)):
        result.extend(query([*conditions, _D.sample_id.in_(part)]))
    return result


def current_decisions_of_tasks(
    session: Session, task_ids: Collection[int]
) -> dict[int, DecisionRecord]:
    result: dict[int, DecisionRecord] = {}
    for part in chunks(sorted(task_ids)):
        latest = current_decision_ids(by=_D.task_id).where(_D.task_id.in_(part))
        rows = session.execute(select(*DECISION_COLUMNS).where(_D.id.in_(latest.scalar_subquery())))
        result.update({row.task_id: DecisionRecord._make(row) for row in rows})
    return result


class HistoryRow(NamedTuple):
    decision: DecisionRecord
    username: str
    source: str
    reason: str
    score: float | None
    withdrawn: bool


def sample_history(session: Session, sample_id: int) -> list[HistoryRow]:
    """Every decision on the sample, oldest first, with the decider's name, the task's source,
    reason and score, and whether a later undo withdrew it."""
    undo = aliased(ReviewDecision)
    withdrawn = exists().where(undo.supersedes_id == _D.id).label("withdrawn")
    rows = session.execute(
        select(*DECISION_COLUMNS, User.username, _T.source, _T.reason, _T.score, withdrawn)
        .join(User, User.id == _D.user_id)
        .join(_T, _T.id == _D.task_id)
        .where(_D.sample_id == sample_id)
        .order_by(_D.id)
    )
    width = len(DECISION_COLUMNS)
    return [
        HistoryRow(
            decision=DecisionRecord._make(row[:width]),
            username=row.username,
            source=row.source,
            reason=row.reason,
            score=row.score,
            withdrawn=bool(row.withdrawn),
        )
        for row in rows
    ]


# --- what the pipeline reads --------------------------------------------------------------------


class DecisionStub(NamedTuple):
    id: int
    kind: TaskKind
    sample_id: int | None
    class_id: int | None
    created_at: datetime


def decisions_after(
    session: Session, dataset_id: int, after_id: int, *, limit: int = 50_000
) -> list[DecisionStub]:
    """Decisions (undo rows included) on the dataset with an id above ``after_id``, by id."""
    rows = session.execute(
        select(
            ReviewDecision.id,
            ReviewDecision.kind,
            ReviewDecision.sample_id,
            ReviewDecision.class_id,
            ReviewDecision.created_at,
        )
        .where(ReviewDecision.dataset_id == dataset_id, ReviewDecision.id > after_id)
        .order_by(ReviewDecision.id)
        .limit(limit)
    )
    return [DecisionStub._make(row) for row in rows]


def decided_sample_ids(session: Session, dataset_id: int) -> set[int]:
    query = select(func.distinct(ReviewDecision.sample_id)).where(
        ReviewDecision.dataset_id == dataset_id, ReviewDecision.sample_id.is_not(None)
    )
    return {int(sid) for sid in session.scalars(query)}


def class_votes(
    session: Session, dataset_id: int, class_ids: Collection[int]
) -> dict[int, list[ClassVote]]:
    """The standing class_check decisions on these classes (neither an undo nor undone),
    oldest first, by class."""
    result: dict[int, list[ClassVote]] = {}
    for part in chunks(sorted(class_ids)):
        rows = session.execute(
            select(
                ReviewDecision.class_id,
                ReviewDecision.id,
                ReviewDecision.task_id,
                ReviewDecision.user_id,
                ReviewDecision.verdict,
            )
            .where(
                ReviewDecision.dataset_id == dataset_id,
                ReviewDecision.kind == TaskKind.CLASS_CHECK,
                ReviewDecision.class_id.in_(part),
                not_withdrawn(),
            )
            .order_by(ReviewDecision.id)
        )
        for class_id, decision_id, task_id, user_id, verdict in rows:
            result.setdefault(int(class_id or 0), []).append(
                ClassVote(
                    decision_id=int(decision_id),
                    task_id=int(task_id),
                    user_id=int(user_id),
                    verdict=verdict,
                )
            )
    return result


def last_class_decision_id(session: Session, dataset_id: int, class_id: int) -> int:
    """The id of the newest class_check decision on the class (undo rows too), 0 if none."""
    newest = session.scalar(
        select(func.max(ReviewDecision.id)).where(
            ReviewDecision.dataset_id == dataset_id,
            ReviewDecision.kind == TaskKind.CLASS_CHECK,
            ReviewDecision.class_id == class_id,
        )
    )
    return int(newest or 0)


def decision_usernames(session: Session, decision_ids: Collection[int]) -> dict[int, str]:
    result: dict[int, str] = {}
    for part in chunks(sorted(decision_ids)):
        rows = session.execute(
            select(ReviewDecision.id, User.username)
            .join(User, User.id == ReviewDecision.user_id)
            .where(ReviewDecision.id.in_(part))
        )
        result.update({int(did): name for did, name in rows})
    return result
