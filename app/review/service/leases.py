"""Leasing review tasks: a queue hands an annotator its best tasks for a while; a page renews
its leases while open and gives them back when hidden or closed. ``lease_batch`` leases with
everything the review pages show of the tasks.

Every function takes the session first and flushes, never commits.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from app.datasets import repository as datasets_repository
from app.errors import Invalid, NotFound
from app.logging import get_logger
from app.models import Dataset, TaskKind, User, utcnow
from app.review.records import LeasedTask, LeaseRenewal, ReferenceSet, ReviewBatch, Suggestion
from app.review.repository import leases as lease_repository
from app.review.repository import references as reference_repository
from app.review.repository.tables import TaskRow

log = get_logger(__name__)

DEFAULT_LEASE = timedelta(minutes=10)
#: Most tasks one lease may take.
MAX_LEASE = 200
#: Most task ids a lease request may name as already held.
MAX_EXCLUDE = 1_000


def lease_tasks(
    session: Session,
    *,
    user: User,
    kind: TaskKind,
    dataset_id: int | None = None,
    n: int = 1,
    exclude: Collection[int] = (),
    now: datetime | None = None,
    lease_for: timedelta = DEFAULT_LEASE,
) -> list[LeasedTask]:
    """Leases up to ``n`` tasks of a queue to ``user`` until ``now + lease_for``.

    The user's own live leases of the queue come first (renewed), except those in ``exclude``
    (what the caller already shows), then pending tasks by priority. Expired leases are
    returned to the queue on the way (on PostgreSQL they can be taken from the next lease on).
    An empty list means the queue is empty for this user.
    """
    if not 1 <= n <= MAX_LEASE:
        raise Invalid(f"n must be between 1 and {MAX_LEASE}")
    if len(exclude) > MAX_EXCLUDE:
        raise Invalid(f"exclude names more than {MAX_EXCLUDE} tasks")
    now = now or utcnow()
    rows = lease_repository.lease(
        session,
        user_id=user.id,
        kind=kind,
        dataset_id=dataset_id,
        exclude=exclude,
        n=n,
        now=now,
        expires_at=now + lease_for,
    )
    if (
        not rows
        and dataset_id is not None
        and datasets_repository.get_dataset(session, dataset_id) is None
    ):
        raise NotFound(f"no dataset {dataset_id}")
    return leased_tasks(rows)


def renew_leases(
    session: Session,
    *,
    user: User,
    task_ids: Collection[int],
    lease_for: timedelta,
    now: datetime | None = None,
) -> LeaseRenewal:
    """A page's heartbeat: extends the user's leases on ``task_ids`` to ``now + lease_for``.

    A lease that lapsed (the page was hidden, or slept) is taken back as long as nobody else
    leased the task since; the others are ``lost``. The lease version does not change, so the
    decisions the page makes under it stay valid.
    """
    _check_held(task_ids)
    now = now or utcnow()
    expires_at = now + lease_for
    wanted = set(task_ids)
    renewed = set(
        lease_repository.renew_leases(
            session, user_id=user.id, task_ids=wanted, expires_at=expires_at
        )
    )
    return LeaseRenewal(
        renewed=sorted(renewed), lost=sorted(wanted - renewed), lease_expires_at=expires_at
    )


def release_leases(
    session: Session, *, user: User, task_ids: Collection[int], now: datetime | None = None
) -> list[int]:
    """Gives back the user's live leases on ``task_ids`` (a page hidden, closed or done with
    them): others may lease those tasks at once. Until someone does, the user's decision on
    one is still taken and a renewal takes it back. Returns the ids released; releasing
    again releases nothing."""
    _check_held(task_ids)
    released = lease_repository.release_leases(
        session, user_id=user.id, task_ids=set(task_ids), now=now or utcnow()
    )
    if released:
        log.info("review.leases.released", user=user.username, n=len(released))
    return sorted(released)


def _check_held(task_ids: Collection[int]) -> None:
    if len(task_ids) > MAX_EXCLUDE:
        raise Invalid(f"name at most {MAX_EXCLUDE} tasks at a time")


def leased_tasks(rows: Sequence[TaskRow]) -> list[LeasedTask]:
    """The leased rows as the service hands them out: best first (priority, then newest)."""
    ordered = sorted(rows, key=lambda row: (-row.priority, -row.id))
    return [_leased_task(row) for row in ordered]


def _leased_task(row: TaskRow) -> LeasedTask:
    assert row.lease_expires_at is not None
    return LeasedTask(
        id=row.id,
        dataset_id=row.dataset_id,
        kind=row.kind,
        sample_id=row.sample_id,
        sample_sha256=row.sample_sha256,
        class_id=row.class_id,
        given_class_id=row.given_class_id,
        priority=row.priority,
        score=row.score,
        source=row.source,
        reason=row.reason,
        suggestions=tuple(
            Suggestion(class_id=int(class_id), probability=float(p))
            for class_id, p in (row.suggestions or [])
        ),
        lease_version=row.lease_version,
        lease_expires_at=row.lease_expires_at,
    )


# --- what the review pages show -----------------------------------------------------------------


def references(
    session: Session,
    class_ids: Sequence[int],
    *,
    per_class: int,
    exclude_samples: Collection[int] = (),
) -> dict[int, ReferenceSet]:
    """Up to ``per_class`` samples showing each class: human-confirmed ones first, then usable
    samples of the class. ``exclude_samples`` (the samples under review) are never shown."""
    unique = list(dict.fromkeys(class_ids))
    confirmed = reference_repository.confirmed_samples(session, unique, per_class=per_class * 2)
    fill = reference_repository.class_samples(
        session, unique, per_class=per_class + len(exclude_samples), exclude=exclude_samples
    )
    result = {}
    for class_id in unique:
        shown = [
            sample
            for sample in dict.fromkeys(confirmed.get(class_id, []) + fill.get(class_id, []))
            if sample.id not in exclude_samples
        ]
        result[class_id] = ReferenceSet(class_id=class_id, samples=shown[:per_class])
    return result


def lease_batch(
    session: Session,
    *,
    user: User,
    dataset: Dataset,
    kind: TaskKind,
    n: int,
    exclude: Collection[int] = (),
    lease_for: timedelta = DEFAULT_LEASE,
    references_per_class: int = 8,
    class_grid: int = 48,
) -> ReviewBatch:
    """Leases up to ``n`` tasks of a queue (as ``lease_tasks``) with what the review pages
    show of them; a few set-based queries, whatever ``n`` is."""
    tasks = lease_tasks(
        session,
        user=user,
        kind=kind,
        dataset_id=dataset.id,
        n=n,
        exclude=exclude,
        lease_for=lease_for,
    )
    if kind is TaskKind.LABEL_CHECK:
        class_ids = [
            class_id
            for task in tasks
            for class_id in (task.given_class_id, *(s.class_id for s in task.suggestions))
            if class_id is not None
        ]
        subjects = {task.sample_id for task in tasks if task.sample_id is not None}
        return ReviewBatch(
            tasks=tasks,
            class_names=reference_repository.class_names(session, set(class_ids)),
            references=references(
                session, class_ids, per_class=references_per_class, exclude_samples=subjects
            ),
        )
    if kind is TaskKind.CLASS_CHECK:
        class_ids = [task.class_id for task in tasks if task.class_id is not None]
        sizes = reference_repository.class_sizes(session, class_ids)
        return ReviewBatch(
            tasks=tasks,
            class_names={class_id: name for class_id, (name, _) in sizes.items()},
            class_sizes={class_id: count for class_id, (_, count) in sizes.items()},
            class_samples=reference_repository.class_samples(
                session, class_ids, per_class=class_grid
            ),
        )
    return ReviewBatch(tasks=tasks)
