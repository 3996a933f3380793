"""Counts and statistics: tasks per queue and state, decisions per annotator and hour, median
seconds per decision, second-opinion pairs.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, and_, case, false, func, literal, or_, select
from sqlalchemy.orm import Session, aliased

from app.models import Dataset, ReviewDecision, ReviewTask, TaskKind, TaskState, User, Verdict
from app.review.repository.tables import dialect

_T = ReviewTask
_D = ReviewDecision


def queue_counts(
    session: Session, now: datetime, *, dataset_id: int | None = None
) -> list[tuple[int, str, TaskKind, TaskState, bool, int]]:
    """(dataset id, dataset name, kind, state, lease expired, count) over every task."""
    expired = and_(_T.state == TaskState.LEASED, _T.lease_expires_at < now)
    expired_flag = case((expired, literal(True)), else_=false())
    query = (
        select(_T.dataset_id, Dataset.name, _T.kind, _T.state, expired_flag, func.count())
        .join(Dataset, Dataset.id == _T.dataset_id)
        .group_by(_T.dataset_id, Dataset.name, _T.kind, _T.state, expired_flag)
    )
    if dataset_id is not None:
        query = query.where(_T.dataset_id == dataset_id)
    return [
        (ds, name, kind, state, bool(is_expired), count)
        for ds, name, kind, state, is_expired, count in session.execute(query)
    ]


def open_counts(session: Session, now: datetime) -> list[tuple[int, str, TaskKind, int, int]]:
    """(dataset id, name, kind, available, leased) for every queue with open tasks, where
    available counts pending tasks and expired leases. Reads the partial indexes only."""
    counts: dict[tuple[int, TaskKind], list[int]] = {}
    pending = session.execute(
        select(_T.dataset_id, _T.kind, func.count())
        .where(_T.state == TaskState.PENDING)
        .group_by(_T.dataset_id, _T.kind)
    )
    for dataset_id, kind, count in pending:
        counts.setdefault((dataset_id, kind), [0, 0])[0] += count
    expired = (_T.lease_expires_at < now).label("expired")
    leased = session.execute(
        select(_T.dataset_id, _T.kind, expired, func.count())
        .where(_T.state == TaskState.LEASED)
        .group_by(_T.dataset_id, _T.kind, expired)
    )
    for dataset_id, kind, is_expired, count in leased:
        counts.setdefault((dataset_id, kind), [0, 0])[0 if is_expired else 1] += count
    rows = session.execute(
        select(Dataset.id, Dataset.name).where(
            Dataset.id.in_({dataset_id for dataset_id, _ in counts})
        )
    )
    names = {dataset_id: name for dataset_id, name in rows}
    return sorted(
        (dataset_id, names[dataset_id], kind, available, held)
        for (dataset_id, kind), (available, held) in counts.items()
    )


def available_count(
    session: Session,
    *,
    kind: TaskKind,
    dataset_id: int,
    user_id: int,
    now: datetime,
    cap: int,
) -> int:
    """Tasks of the queue this user could still be handed (not their own leases), counted up
    to ``cap`` so the count stays cheap on a long queue."""
    waiting = (
        select(literal(1))
        .select_from(_T)
        .where(
            _T.dataset_id == dataset_id,
            _T.kind == kind,
            or_(
                _T.state == TaskState.PENDING,
                and_(_T.state == TaskState.LEASED, _T.lease_expires_at < now),
            ),
            or_(_T.exclude_user_id.is_(None), _T.exclude_user_id != user_id),
        )
        .limit(cap)
        .subquery()
    )
    return int(session.scalar(select(func.count()).select_from(waiting)) or 0)


def _hour_bucket(session: Session) -> Any:
    if dialect(session) == "postgresql":
        return func.date_trunc("hour", func.timezone("UTC", _D.created_at))
    return func.strftime("%Y-%m-%d %H:00:00", _D.created_at)


def decisions_by_user_hour(
    session: Session, since: datetime, *, dataset_id: int | None = None
) -> list[tuple[int, Any, int]]:
    """(user id, hour bucket, decisions) since ``since``; undo rows not counted. The bucket is a
    naive UTC datetime on PostgreSQL and 'YYYY-MM-DD HH:00:00' (UTC) text on SQLite."""
    bucket = _hour_bucket(session).label("hour")
    query = (
        select(_D.user_id, bucket, func.count())
        .where(_D.created_at >= since, _D.verdict != Verdict.UNDO)
        .group_by(_D.user_id, bucket)
        .order_by(_D.user_id, bucket)
    )
    if dataset_id is not None:
        query = query.where(_D.dataset_id == dataset_id)
    return [(user_id, hour, count) for user_id, hour, count in session.execute(query)]


def median_seconds(
    session: Session,
    since: datetime,
    *,
    dataset_id: int | None = None,
    user_id: int | None = None,
    per_user: bool = False,
) -> dict[int | None, float]:
    """Median ``seconds`` of the decisions since ``since`` (undo rows left out), overall (key
    None) or per user; computed in SQL with window functions, the same on both engines."""
    partition = [_D.user_id] if per_user else []
    ranked = select(
        (_D.user_id if per_user else literal(None, Integer)).label("user_id"),
        _D.seconds.label("seconds"),
        func.row_number().over(partition_by=partition, order_by=_D.seconds).label("rn"),
        func.count().over(partition_by=partition).label("n"),
    ).where(_D.created_at >= since, _D.verdict != Verdict.UNDO)
    if dataset_id is not None:
        ranked = ranked.where(_D.dataset_id == dataset_id)
    if user_id is not None:
        ranked = ranked.where(_D.user_id == user_id)
    sub = ranked.subquery()
    middle = or_(sub.c.rn == (sub.c.n + 1) // 2, sub.c.rn == (sub.c.n + 2) // 2)
    rows = session.execute(
        select(sub.c.user_id, func.avg(sub.c.seconds)).where(middle).group_by(sub.c.user_id)
    )
    return {user: float(value) for user, value in rows if value is not None}


def decisions_by_kind(session: Session, *, user_id: int, since: datetime) -> dict[TaskKind, int]:
    rows = session.execute(
        select(_D.kind, func.count())
        .where(_D.user_id == user_id, _D.created_at >= since, _D.verdict != Verdict.UNDO)
        .group_by(_D.kind)
    )
    return {kind: count for kind, count in rows}


def second_opinion_pairs(
    session: Session, dataset_id: int | None
) -> list[tuple[TaskKind, int, int]]:
    """(kind, original task id, second-opinion task id) where both are decided."""
    origin = aliased(ReviewTask)
    query = (
        select(_T.kind, origin.id, _T.id)
        .join(origin, origin.id == _T.origin_task_id)
        .where(_T.state == TaskState.DONE, origin.state == TaskState.DONE)
    )
    if dataset_id is not None:
        query = query.where(_T.dataset_id == dataset_id)
    return [(kind, first, second) for kind, first, second in session.execute(query)]


def usernames(session: Session, user_ids: Collection[int]) -> dict[int, str]:
    if not user_ids:
        return {}
    rows = session.execute(select(User.id, User.username).where(User.id.in_(user_ids)))
    return {user_id: name for user_id, name in rows}
