"""Lease queries: taking tasks off a queue, renewing, releasing and reopening leases, and who
holds a round's open tasks.

The hot path (a lease, a decision) runs prebuilt Core statements on the tables: no ORM
bookkeeping and no statement building per request. Task states are written into the SQL as
literals so that PostgreSQL can match the partial indexes even in a generic (prepared) plan.

On PostgreSQL a lease takes rows with ``FOR UPDATE SKIP LOCKED``, in one statement; on SQLite
every transaction already holds the write lock (``BEGIN IMMEDIATE``), and ``FOR UPDATE`` is
left out.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Executable,
    Label,
    Select,
    Update,
    and_,
    bindparam,
    exists,
    func,
    literal_column,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.orm import Session

from app.db import chunks
from app.models import ReviewTask, TaskKind, TaskState, User
from app.review.repository.tables import DECISIONS, SAMPLE_ROWS, TASKS, TaskRow, dialect

_t = TASKS.c


_IS_PENDING = _t.state == literal_column("'pending'")

_IS_LEASED = _t.state == literal_column("'leased'")


def _of_the_sample(column: ColumnElement[Any], name: str) -> Label[Any]:
    """A column of the task's sample, as a scalar subquery, so that an UPDATE … RETURNING hands
    it back too."""
    return select(column).where(SAMPLE_ROWS.c.id == _t.sample_id).scalar_subquery().label(name)


_LEASE_RETURNING = (
    _t.id,
    _t.dataset_id,
    _t.kind,
    _t.sample_id,
    _t.class_id,
    _t.priority,
    _t.score,
    _t.source,
    _t.reason,
    _t.suggestions,
    _t.lease_version,
    _t.lease_expires_at,
    _of_the_sample(SAMPLE_ROWS.c.class_id, "given_class_id"),
    _of_the_sample(SAMPLE_ROWS.c.sha256, "sample_sha256"),
)


def _held(by_dataset: bool, excluding: bool) -> Select[Any]:
    """The caller's live leases of the queue, best first, locked."""
    held = select(_t.id).where(
        _IS_LEASED,
        _t.lease_expires_at >= bindparam("p_now"),
        _t.lease_owner_id == bindparam("p_user"),
        _t.kind == bindparam("p_kind"),
    )
    if by_dataset:
        held = held.where(_t.dataset_id == bindparam("p_dataset"))
    if excluding:
        held = held.where(_t.id.not_in(bindparam("p_exclude", expanding=True)))
    return held.order_by(_t.priority.desc(), _t.id.desc()).limit(bindparam("p_n")).with_for_update()


_VOTE = DECISIONS.alias("vote")

_VOTE_UNDONE = DECISIONS.alias("vote_undone")


def _not_voted_on_the_class() -> ColumnElement[bool]:
    """The caller has no standing class_check vote on the task's class: a class drop needs
    distinct people, so nobody is asked about a class twice (read from the partial index
    ``ix_review_decisions_class_vote``)."""
    vote, undone = _VOTE.c, _VOTE_UNDONE.c
    return ~exists().where(
        vote.class_id == _t.class_id,
        vote.kind == literal_column("'class_check'"),
        vote.user_id == bindparam("p_user"),
        vote.verdict != literal_column("'undo'"),
        ~exists().where(undone.supersedes_id == vote.id),
    )


def _available(by_dataset: bool, limit: Any, voting: bool) -> Select[Any]:
    """The best ``limit`` tasks of the queue the caller may take: pending tasks and expired
    leases, each read from its own partial index, skipping rows other transactions hold.
    ``voting`` (class_check): not the classes the caller voted on already."""
    branches = []
    for state in (_IS_PENDING, and_(_IS_LEASED, _t.lease_expires_at < bindparam("p_now"))):
        branch = select(_t.id, _t.priority).where(
            state,
            _t.kind == bindparam("p_kind"),
            or_(_t.exclude_user_id.is_(None), _t.exclude_user_id != bindparam("p_user")),
        )
        if by_dataset:
            branch = branch.where(_t.dataset_id == bindparam("p_dataset"))
        if voting:
            branch = branch.where(_not_voted_on_the_class())
        best = (
            branch.order_by(_t.priority.desc(), _t.id.desc())
            .limit(limit)
            .with_for_update(skip_locked=True)
            .subquery()
        )
        branches.append(select(best.c.id, best.c.priority))
    both = union_all(*branches).subquery()
    return select(both.c.id).order_by(both.c.priority.desc(), both.c.id.desc()).limit(limit)


def _renew(held: Select[Any]) -> Update:
    return (
        update(TASKS)
        .where(_t.id.in_(held.scalar_subquery()))
        .values(lease_expires_at=bindparam("p_expires"))
        .returning(*_LEASE_RETURNING)
    )


def _take(by_dataset: bool, limit: Any, voting: bool) -> Update:
    return (
        update(TASKS)
        .where(_t.id.in_(_available(by_dataset, limit, voting).scalar_subquery()))
        .values(
            state=TaskState.LEASED,
            lease_owner_id=bindparam("p_user"),
            lease_expires_at=bindparam("p_expires"),
            lease_version=_t.lease_version + 1,
        )
        .returning(*_LEASE_RETURNING)
    )


@cache
def _sqlite_lease(by_dataset: bool, excluding: bool, voting: bool) -> tuple[Update, Update]:
    return _renew(_held(by_dataset, excluding)), _take(by_dataset, bindparam("p_n"), voting)


@cache
def _postgres_lease(by_dataset: bool, excluding: bool, voting: bool) -> Executable:
    """A whole lease in one statement (one round trip), as data-modifying CTEs: ``renewed``,
    the caller's own live leases; ``taken``, available tasks up to ``p_n`` in all. And
    ``no_flush``: this commit need not wait for the disk, since a lease lost in a crash costs
    nothing (the task is leased again, and a decision made under the lost lease is refused).
    """
    no_flush = select(func.set_config("synchronous_commit", "off", True).label("v")).cte("no_flush")
    held = _held(by_dataset, excluding).where(exists(select(no_flush.c.v)))
    renewed = _renew(held).cte("renewed")
    left: Any = bindparam("p_n") - select(func.count()).select_from(renewed).scalar_subquery()
    taken = _take(by_dataset, left, voting).cte("taken")
    return union_all(select(renewed), select(taken)).add_cte(no_flush)


def lease(
    session: Session,
    *,
    user_id: int,
    kind: TaskKind,
    dataset_id: int | None,
    exclude: Collection[int],
    n: int,
    now: datetime,
    expires_at: datetime,
) -> list[TaskRow]:
    """Leases up to ``n`` tasks of a queue to ``user_id`` until ``expires_at``: first its own
    live leases (other than ``exclude``), renewed, then available tasks by priority (newest
    first on ties): pending ones and expired leases of anyone. Rows other transactions hold
    are skipped, so concurrent leases never wait on each other nor take the same task. A
    class_check task is never handed to someone who voted on its class already.
    """
    params: dict[str, Any] = {
        "p_user": user_id,
        "p_kind": kind,
        "p_n": n,
        "p_now": now,
        "p_expires": expires_at,
    }
    if dataset_id is not None:
        params["p_dataset"] = dataset_id
    if exclude:
        params["p_exclude"] = list(exclude)
    by_dataset, excluding = dataset_id is not None, bool(exclude)
    voting = kind is TaskKind.CLASS_CHECK
    if dialect(session) == "postgresql":
        rows = session.execute(_postgres_lease(by_dataset, excluding, voting), params)
        return [TaskRow._make(row) for row in rows]
    renew, take = _sqlite_lease(by_dataset, excluding, voting)
    found = [TaskRow._make(row) for row in session.execute(renew, params)]
    if len(found) < n:
        rows = session.execute(take, {**params, "p_n": n - len(found)})
        found += [TaskRow._make(row) for row in rows]
    return found


def renew_leases(
    session: Session, *, user_id: int, task_ids: Collection[int], expires_at: datetime
) -> list[int]:
    """Moves the expiry of ``user_id``'s leases on these tasks to ``expires_at``: live ones,
    and expired ones nobody took since (the owner is still ``user_id``). Returns their ids."""
    renewed: list[int] = []
    for part in chunks(sorted(task_ids)):
        renewed.extend(
            session.scalars(
                update(TASKS)
                .where(_t.id.in_(part), _IS_LEASED, _t.lease_owner_id == user_id)
                .values(lease_expires_at=expires_at)
                .returning(_t.id)
            )
        )
    return renewed


def release_leases(
    session: Session, *, user_id: int, task_ids: Collection[int], now: datetime
) -> list[int]:
    """Ends ``user_id``'s live leases on these tasks now: anyone may lease them from then on,
    and until someone does the owner stays, so its decision or renewal is still taken.
    Returns the ids released."""
    released: list[int] = []
    for part in chunks(sorted(task_ids)):
        released.extend(
            session.scalars(
                update(TASKS)
                .where(
                    _t.id.in_(part),
                    _IS_LEASED,
                    _t.lease_owner_id == user_id,
                    _t.lease_expires_at > now,
                )
                .values(lease_expires_at=now)
                .returning(_t.id)
            )
        )
    return released


def task_row(session: Session, task_id: int) -> TaskRow:
    return TaskRow._make(session.execute(select(*_LEASE_RETURNING).where(_t.id == task_id)).one())


def reopen_task(session: Session, *, task_id: int, user_id: int, expires_at: datetime) -> TaskRow:
    """Leases a decided task again to ``user_id`` (after an undo), under a new lease version."""
    row = session.execute(
        update(TASKS)
        .where(_t.id == task_id)
        .values(
            state=TaskState.LEASED,
            lease_owner_id=user_id,
            lease_expires_at=expires_at,
            lease_version=_t.lease_version + 1,
            done_at=None,
        )
        .returning(*_LEASE_RETURNING)
    ).one()
    return TaskRow._make(row)


class TaskHold(NamedTuple):
    """Open tasks of a round of one kind: under a live lease of ``username`` until ``until``,
    or (``username`` None) waiting for an annotator."""

    kind: TaskKind
    username: str | None
    tasks: int
    until: datetime | None


def open_task_holds(
    session: Session, dataset_id: int, source: str, now: datetime
) -> list[TaskHold]:
    """Who holds the round's open tasks (its ``source``, copies included): live leases by
    holder, then the tasks nobody holds (pending, or leased once and lapsed)."""
    of_round = and_(ReviewTask.dataset_id == dataset_id, ReviewTask.source == source)
    live = and_(ReviewTask.state == TaskState.LEASED, ReviewTask.lease_expires_at >= now)
    held = session.execute(
        select(ReviewTask.kind, User.username, func.count(), func.max(ReviewTask.lease_expires_at))
        .join(User, User.id == ReviewTask.lease_owner_id)
        .where(of_round, live)
        .group_by(ReviewTask.kind, User.username)
        .order_by(func.count().desc(), User.username)
    )
    free = session.execute(
        select(ReviewTask.kind, func.count())
        .where(
            of_round,
            or_(
                ReviewTask.state == TaskState.PENDING,
                and_(ReviewTask.state == TaskState.LEASED, ReviewTask.lease_expires_at < now),
            ),
        )
        .group_by(ReviewTask.kind)
        .order_by(ReviewTask.kind)
    )
    return [TaskHold(kind, name, int(n), until) for kind, name, n, until in held] + [
        TaskHold(kind, None, int(n), None) for kind, n in free
    ]
