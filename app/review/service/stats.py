"""Statistics of the review queues: tasks per queue and state, each annotator's pace, agreement
on tasks decided twice, and an annotator's progress today.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from app.errors import Invalid
from app.models import TaskKind, TaskState, User, utcnow
from app.review.records import (
    Agreement,
    AnnotatorStats,
    HourCount,
    QueueCount,
    QueueProgress,
    QueueStats,
)
from app.review.repository import stats as stats_repository
from app.review.repository import verdicts as verdict_repository


def queue_counts(
    session: Session, *, dataset_id: int | None = None, now: datetime | None = None
) -> list[QueueCount]:
    """Every queue's tasks by state, per dataset and kind; an expired lease counts as pending."""
    now = now or utcnow()
    table: dict[tuple[int, str, TaskKind], Counter[str]] = {}
    for ds, name, kind, state, expired, count in stats_repository.queue_counts(
        session, now, dataset_id=dataset_id
    ):
        bucket = TaskState.PENDING if expired else state
        table.setdefault((ds, name, kind), Counter())[bucket.value] += count
    return [
        QueueCount(
            dataset_id=ds,
            dataset_name=name,
            kind=kind,
            pending=counts[TaskState.PENDING.value],
            leased=counts[TaskState.LEASED.value],
            done=counts[TaskState.DONE.value],
            cancelled=counts[TaskState.CANCELLED.value],
        )
        for (ds, name, kind), counts in sorted(table.items(), key=lambda item: item[0][1:])
    ]


def open_queues(session: Session, *, now: datetime | None = None) -> list[QueueCount]:
    """Queues with tasks left to do (available or leased); only pending and leased counted."""
    now = now or utcnow()
    return [
        QueueCount(
            dataset_id=ds,
            dataset_name=name,
            kind=kind,
            pending=available,
            leased=leased,
            done=0,
            cancelled=0,
        )
        for ds, name, kind, available, leased in stats_repository.open_counts(session, now)
    ]


def remaining(
    session: Session,
    *,
    user: User,
    kind: TaskKind,
    dataset_id: int,
    cap: int = 10_000,
    now: datetime | None = None,
) -> int:
    """Tasks of the queue waiting for anyone (that ``user`` may be handed), counted up to
    ``cap``."""
    return stats_repository.available_count(
        session, kind=kind, dataset_id=dataset_id, user_id=user.id, now=now or utcnow(), cap=cap
    )


def queue_stats(
    session: Session,
    *,
    dataset_id: int | None = None,
    hours: int = 24,
    now: datetime | None = None,
) -> QueueStats:
    """Counts per queue; per annotator their decisions per hour over the last ``hours`` and
    median seconds per decision; agreement on tasks decided twice (second opinions)."""
    if not 1 <= hours <= 24 * 90:
        raise Invalid("hours must be between 1 and 2160")
    now = now or utcnow()
    since = now - timedelta(hours=hours)
    by_hour: dict[int, list[HourCount]] = {}
    for user_id, hour, count in stats_repository.decisions_by_user_hour(
        session, since, dataset_id=dataset_id
    ):
        by_hour.setdefault(user_id, []).append(HourCount(hour=_as_hour(hour), decisions=count))
    medians = stats_repository.median_seconds(session, since, dataset_id=dataset_id, per_user=True)
    overall = stats_repository.median_seconds(session, since, dataset_id=dataset_id).get(None)
    names = stats_repository.usernames(session, by_hour)
    annotators = []
    for user_id, hours_list in by_hour.items():
        total = sum(h.decisions for h in hours_list)
        annotators.append(
            AnnotatorStats(
                user_id=user_id,
                username=names.get(user_id, f"user {user_id}"),
                decisions=total,
                active_hours=len(hours_list),
                decisions_per_hour=total / len(hours_list),
                median_seconds=medians.get(user_id),
                by_hour=hours_list,
            )
        )
    annotators.sort(key=lambda a: (-a.decisions, a.username))
    return QueueStats(
        since=since,
        queues=queue_counts(session, dataset_id=dataset_id, now=now),
        annotators=annotators,
        median_seconds=overall,
        agreement=agreement(session, dataset_id=dataset_id),
    )


def _as_hour(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def agreement(session: Session, *, dataset_id: int | None = None) -> list[Agreement]:
    """Per kind, how often the second opinion gave the same verdict as the original decision
    (and the same class, where the verdict names one)."""
    pairs = stats_repository.second_opinion_pairs(session, dataset_id)
    current = verdict_repository.current_decisions_of_tasks(
        session, {task for _, first, second in pairs for task in (first, second)}
    )
    totals: Counter[TaskKind] = Counter()
    agreed: Counter[TaskKind] = Counter()
    for kind, first, second in pairs:
        a, b = current.get(first), current.get(second)
        if a is None or b is None:
            continue
        totals[kind] += 1
        if a.verdict is b.verdict and a.class_id == b.class_id:
            agreed[kind] += 1
    return [
        Agreement(kind=kind, pairs=totals[kind], agreed=agreed[kind]) for kind in sorted(totals)
    ]


def progress(
    session: Session, *, user: User, since: datetime | None = None, now: datetime | None = None
) -> QueueProgress:
    """The user's decisions since ``since`` (default: midnight UTC today)."""
    now = now or utcnow()
    since = since or now.replace(hour=0, minute=0, second=0, microsecond=0)
    by_kind = stats_repository.decisions_by_kind(session, user_id=user.id, since=since)
    median = stats_repository.median_seconds(session, since, user_id=user.id).get(None)
    return QueueProgress(
        since=since, decisions=sum(by_kind.values()), by_kind=by_kind, median_seconds=median
    )
