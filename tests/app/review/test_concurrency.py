"""50 annotators race for one queue on PostgreSQL: every task decided once, none held twice."""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from app.db import create_db_engine, create_session_factory, transaction
from app.errors import AppError
from app.models import (
    Dataset,
    ImportFormat,
    LabelClass,
    ReviewDecision,
    ReviewTask,
    Sample,
    TaskKind,
    TaskState,
    User,
    Verdict,
    utcnow,
)
from app.review.records import DecisionInput, TaskItem
from app.review.service import decisions as decision_service
from app.review.service import leases as lease_service
from app.review.service import tasks as task_service
from tests.app.review.factories import make_user

pytestmark = pytest.mark.postgres

ANNOTATORS = 50
TASKS = 5_000


@dataclass
class Annotator:
    user: User
    seed: int
    leased: list[tuple[int, int]] = field(default_factory=list)  # (task id, lease version)
    decided: int = 0
    replays: int = 0
    errors: list[str] = field(default_factory=list)


def test_fifty_annotators_decide_every_task_exactly_once(db_url: str, tmp_path: Path) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("the race is about PostgreSQL row locks; SQLite runs one writer at a time")
    engine = create_db_engine(db_url, pool_size=ANNOTATORS, max_overflow=0)
    factory = create_session_factory(engine)
    try:
        annotators = _queue_the_race(factory, tmp_path)
        start = threading.Barrier(ANNOTATORS)
        threads = [threading.Thread(target=_work, args=(a, factory, start)) for a in annotators]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

        assert [error for a in annotators for error in a.errors] == []
        assert not any(thread.is_alive() for thread in threads)
        leases = Counter(task_id for a in annotators for task_id, _ in a.leased)
        assert len(leases) == TASKS
        assert max(leases.values()) == 1  # no task was ever held by two annotators
        assert sum(a.decided for a in annotators) == TASKS
        assert sum(a.replays for a in annotators) > 0
        _check_every_task_decided_once(factory)
    finally:
        engine.dispose()


def _queue_the_race(factory: sessionmaker[Session], root: Path) -> list[Annotator]:
    """A dataset of ``TASKS`` samples, a junk_check task for each, and the annotators."""
    with transaction(factory) as session:
        dataset = Dataset(
            name="race", root=str(root), source=str(root), source_format=ImportFormat.IMAGEFOLDER
        )
        session.add(dataset)
        session.flush()
        label = LabelClass(dataset_id=dataset.id, name="thing", sample_count=TASKS)
        session.add(label)
        session.flush()
        now = utcnow()
        rng = random.Random(0)
        sample_ids = session.scalars(
            insert(Sample).returning(Sample.id),
            [
                {
                    "dataset_id": dataset.id,
                    "class_id": label.id,
                    "path": f"{i}.jpg",
                    "created_at": now,
                    "updated_at": now,
                    "missing": False,
                }
                for i in range(TASKS)
            ],
        ).all()
        task_service.create_tasks(
            session,
            dataset=dataset,
            kind=TaskKind.JUNK_CHECK,
            source="race",
            items=[TaskItem(sample_id=s, priority=rng.random()) for s in sample_ids],
        )
        return [Annotator(user=make_user(session, f"a{i}"), seed=i) for i in range(ANNOTATORS)]


def _work(me: Annotator, factory: sessionmaker[Session], start: threading.Barrier) -> None:
    """One annotator: lease, decide (a page at once or one by one, sometimes sent twice, as a
    retrying browser does), until the queue is empty. Errors are kept in ``me.errors``."""
    rng = random.Random(me.seed)
    start.wait()
    try:
        while True:
            with transaction(factory) as session:
                tasks = lease_service.lease_tasks(
                    session, user=me.user, kind=TaskKind.JUNK_CHECK, n=rng.randint(1, 16)
                )
            if not tasks:
                return
            me.leased += [(t.id, t.lease_version) for t in tasks]
            decisions = [
                DecisionInput(
                    task_id=t.id,
                    lease_version=t.lease_version,
                    verdict=rng.choice([Verdict.JUNK, Verdict.NOT_JUNK]),
                    idempotency_key=f"{me.user.id}-{t.id}",
                    seconds=rng.random(),
                )
                for t in tasks
            ]
            batches = [decisions] if rng.random() < 0.8 else [[d] for d in decisions]
            for batch in batches:
                with transaction(factory) as session:
                    first = decision_service.decide(session, user=me.user, decisions=batch)
                me.decided += len(batch)
                if rng.random() < 0.1:  # the browser retries: same keys, same answer
                    with transaction(factory) as session:
                        again = decision_service.decide(session, user=me.user, decisions=batch)
                    assert again == first
                    me.replays += len(batch)
    except (AppError, AssertionError) as exc:  # pragma: no cover - reported by the test
        me.errors.append(repr(exc))


def _check_every_task_decided_once(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        per_task = Counter(session.scalars(select(ReviewDecision.task_id)).all())
        states = Counter(session.scalars(select(ReviewTask.state)).all())
        owners_match = session.scalar(
            select(func.count())
            .select_from(ReviewDecision)
            .join(ReviewTask, ReviewTask.id == ReviewDecision.task_id)
            .where(ReviewDecision.user_id != ReviewTask.lease_owner_id)
        )
    assert len(per_task) == TASKS
    assert set(per_task.values()) == {1}
    assert states == {TaskState.DONE: TASKS}
    assert owners_match == 0
