"""Helpers the review service tests share: queue, decide and undo in a transaction of their
own, and build decisions."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.errors import AppError
from app.models import ReviewDecision, ReviewTask, TaskKind, User, Verdict
from app.review.records import DecisionInput, DecisionRecord, LeasedTask, UndoResult
from app.review.service import decisions as decision_service
from tests.app.review.factories import Pets, lease, queue

JUNK = TaskKind.JUNK_CHECK
LABEL = TaskKind.LABEL_CHECK


def create(
    factory: sessionmaker[Session],
    pets: Pets,
    kind: TaskKind,
    subjects: list[int],
    **options: object,
) -> list[int]:
    with transaction(factory) as session:
        return queue(session, pets, kind, subjects, **options)  # type: ignore[arg-type]


def cats_leased(
    factory: sessionmaker[Session],
    pets: Pets,
    user: User,
    kind: TaskKind,
    n: int = 1,
    **options: object,
) -> list[LeasedTask]:
    """Queues ``kind`` tasks for the first ``n`` cats and leases them all to ``user``."""
    create(factory, pets, kind, pets.samples["cat"][:n])
    return lease(factory, user, kind, n=n, **options)


def decide(
    factory: sessionmaker[Session], user: User, *decisions: DecisionInput
) -> list[DecisionRecord]:
    with transaction(factory) as session:
        return decision_service.decide(session, user=user, decisions=list(decisions))


def decide_all(
    factory: sessionmaker[Session],
    user: User,
    tasks: list[LeasedTask],
    verdicts: list[Verdict],
    *,
    seconds: list[float] | None = None,
    now: datetime | None = None,
    class_ids: list[int | None] | None = None,
) -> None:
    with transaction(factory) as session:
        decision_service.decide(
            session,
            user=user,
            decisions=[
                DecisionInput(
                    task_id=task.id,
                    lease_version=task.lease_version,
                    verdict=verdict,
                    idempotency_key=f"{user.username}-{task.id}-{task.lease_version}",
                    seconds=seconds[i] if seconds else 1.0,
                    class_id=class_ids[i] if class_ids else None,
                )
                for i, (task, verdict) in enumerate(zip(tasks, verdicts, strict=True))
            ],
            now=now,
        )


def verdict(
    task: LeasedTask, value: Verdict, key: str | None = None, **options: object
) -> DecisionInput:
    return DecisionInput(
        task_id=task.id,
        lease_version=task.lease_version,
        verdict=value,
        idempotency_key=key or f"k-{task.id}-{task.lease_version}-{value.value}",
        **options,  # type: ignore[arg-type]
    )


def decision_count(factory: sessionmaker[Session]) -> int:
    with transaction(factory) as session:
        return session.scalar(select(func.count()).select_from(ReviewDecision)) or 0


def task_state(factory: sessionmaker[Session], task_id: int) -> ReviewTask:
    with transaction(factory) as session:
        return session.get_one(ReviewTask, task_id)


def refused(error: type[AppError], call: object, *args: object, **kwargs: object) -> AppError:
    with pytest.raises(error) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return caught.value


def undo(
    factory: sessionmaker[Session], user: User, decision_id: int, key: str = "undo-1"
) -> UndoResult:
    with transaction(factory) as session:
        return decision_service.undo(
            session, user=user, decision_id=decision_id, idempotency_key=key
        )
