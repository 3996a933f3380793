"""Deciding review tasks: batches all or none, idempotency keys, lost leases, the checks a
decision must pass (SQLite and PostgreSQL). Undo is in test_undo.py."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.errors import Forbidden, Invalid, NotFound
from app.models import ReviewTask, TaskKind, TaskState, Verdict, utcnow
from app.review.records import DecisionInput, DecisionRecord
from app.review.service import decisions as decision_service
from app.review.service import leases as lease_service
from tests.app.review.conftest import People
from tests.app.review.factories import Pets, lease, make_pets
from tests.app.review.service.helpers import (
    JUNK,
    LABEL,
    cats_leased,
    create,
    decide,
    decision_count,
    refused,
    task_state,
    verdict,
)


def test_decision_marks_task_done(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    [task] = cats_leased(session_factory, pets, people.ann, JUNK)
    [record] = decide(session_factory, people.ann, verdict(task, Verdict.JUNK, seconds=1.5))
    assert (record.verdict, record.sample_id, record.seconds) == (
        Verdict.JUNK,
        task.sample_id,
        1.5,
    )
    done = task_state(session_factory, task.id)
    assert done.state is TaskState.DONE
    assert done.done_at is not None


def test_grid_page_is_recorded_in_one_batch(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, JUNK, pets.all_samples)
    page = lease(session_factory, people.ann, JUNK, n=10)
    records = decide(
        session_factory,
        people.ann,
        *(verdict(t, Verdict.JUNK if i % 3 == 0 else Verdict.NOT_JUNK) for i, t in enumerate(page)),
    )
    assert [r.task_id for r in records] == [t.id for t in page]
    assert [r.verdict for r in records].count(Verdict.JUNK) == 4
    assert decision_count(session_factory) == 10


def test_same_idempotency_key_is_recorded_once_and_answered_the_same(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    tasks = cats_leased(session_factory, pets, people.ann, JUNK, n=2)
    first = decide(session_factory, people.ann, verdict(tasks[0], Verdict.JUNK, key="a"))
    again = decide(
        session_factory,
        people.ann,
        verdict(tasks[0], Verdict.JUNK, key="a"),
        verdict(tasks[1], Verdict.NOT_JUNK, key="b"),
    )
    assert again[0] == first[0]
    assert decision_count(session_factory) == 2


def test_idempotency_key_reused_for_another_decision_is_refused(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    tasks = cats_leased(session_factory, pets, people.ann, JUNK, n=2)
    decide(session_factory, people.ann, verdict(tasks[0], Verdict.JUNK, key="a"))
    error = refused(
        decision_service.KeyReused,
        decide,
        session_factory,
        people.ann,
        verdict(tasks[1], Verdict.JUNK, key="a"),
    )
    assert error.status_code == 422
    refused(
        decision_service.KeyReused,
        decide,
        session_factory,
        people.ann,
        verdict(tasks[0], Verdict.NOT_JUNK, key="a"),
    )
    assert decision_count(session_factory) == 1


def test_keys_are_per_user(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, JUNK, pets.samples["cat"][:2])
    [a] = lease(session_factory, people.ann, JUNK)
    [b] = lease(session_factory, people.bob, JUNK)
    decide(session_factory, people.ann, verdict(a, Verdict.JUNK, key="same"))
    decide(session_factory, people.bob, verdict(b, Verdict.JUNK, key="same"))
    assert decision_count(session_factory) == 2


def test_decision_after_lease_was_lost_to_another_annotator_gets_409(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    [mine, kept] = cats_leased(
        session_factory, pets, people.ann, JUNK, n=2, lease_for=timedelta(seconds=30)
    )
    later = utcnow() + timedelta(minutes=1)
    with transaction(session_factory) as session:  # ann renews only one of the two
        lease_service.lease_tasks(session, user=people.ann, kind=JUNK, n=1, now=utcnow())
    taken = lease(session_factory, people.bob, JUNK, n=2, now=later)
    lost_id = next(t.id for t in taken)
    lost = mine if mine.id == lost_id else kept
    other = kept if lost is mine else mine
    error = refused(
        decision_service.TaskLeaseLost,
        decide,
        session_factory,
        people.ann,
        verdict(other, Verdict.JUNK),
        verdict(lost, Verdict.JUNK),
    )
    assert error.status_code == 409
    assert error.details["task_ids"] == [lost.id]
    assert "another annotator" in error.message
    assert decision_count(session_factory) == 0


def test_decision_on_expired_lease_nobody_took_is_accepted(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, JUNK, pets.samples["cat"][:1])
    create(session_factory, pets, LABEL, pets.samples["dog"][:1])
    [task] = lease(session_factory, people.ann, JUNK, lease_for=timedelta(seconds=1))
    later = utcnow() + timedelta(minutes=5)
    lease(session_factory, people.bob, LABEL, now=later)  # another queue: ann's task stays free
    with transaction(session_factory) as session:
        [record] = decision_service.decide(
            session, user=people.ann, decisions=[verdict(task, Verdict.NOT_JUNK)], now=later
        )
    assert record.verdict is Verdict.NOT_JUNK
    assert task_state(session_factory, task.id).state is TaskState.DONE


def test_decision_on_another_users_lease_is_forbidden(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, JUNK, pets.samples["cat"][:2])
    [theirs] = lease(session_factory, people.bob, JUNK)
    error = refused(
        decision_service.NotYourLease,
        decide,
        session_factory,
        people.ann,
        verdict(theirs, Verdict.JUNK),
    )
    assert isinstance(error, Forbidden)
    with transaction(session_factory) as session:
        never_leased = session.scalars(
            select(ReviewTask.id).where(ReviewTask.state == TaskState.PENDING)
        ).one()
    pending = DecisionInput(never_leased, 0, Verdict.JUNK, "k")
    refused(decision_service.NotYourLease, decide, session_factory, people.ann, pending)
    assert decision_count(session_factory) == 0


def test_decided_task_cannot_be_decided_again(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    [task] = cats_leased(session_factory, pets, people.ann, JUNK)
    decide(session_factory, people.ann, verdict(task, Verdict.JUNK, key="a"))
    error = refused(
        decision_service.AlreadyDecided,
        decide,
        session_factory,
        people.ann,
        verdict(task, Verdict.NOT_JUNK, key="b"),
    )
    assert error.status_code == 409


def test_unknown_task_ids_get_404_and_nothing_is_written(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    [task] = cats_leased(session_factory, pets, people.ann, JUNK)
    error = refused(
        NotFound,
        decide,
        session_factory,
        people.ann,
        verdict(task, Verdict.JUNK),
        DecisionInput(987_654, 1, Verdict.JUNK, "ghost"),
    )
    assert error.details["task_ids"] == [987_654]
    assert decision_count(session_factory) == 0
    assert task_state(session_factory, task.id).state is TaskState.LEASED


@pytest.mark.parametrize(
    ("kind", "wrong"),
    [
        (JUNK, Verdict.ACCEPT),
        (TaskKind.JUNK_AUDIT, Verdict.KEEP),
        (LABEL, Verdict.NOT_JUNK),
        (TaskKind.CLASS_CHECK, Verdict.JUNK),
    ],
)
def test_verdict_must_fit_the_task_kind(
    session_factory: sessionmaker[Session],
    pets: Pets,
    people: People,
    kind: TaskKind,
    wrong: Verdict,
) -> None:
    subjects = [pets.classes["cat"]] if kind.is_about_a_class else pets.samples["cat"][:1]
    create(session_factory, pets, kind, subjects)
    [task] = lease(session_factory, people.ann, kind)
    error = refused(Invalid, decide, session_factory, people.ann, verdict(task, wrong))
    assert f"a {kind.value} task" in error.message
    assert decision_count(session_factory) == 0


def test_undo_is_not_a_verdict_of_the_decisions_batch(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    [task] = cats_leased(session_factory, pets, people.ann, JUNK)
    assert (
        "undo"
        in refused(
            Invalid, decide, session_factory, people.ann, verdict(task, Verdict.UNDO)
        ).message
    )


def test_relabel_needs_a_class_of_the_tasks_dataset(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    with transaction(session_factory) as session:
        other = make_pets(session, pets.root.parent / "other", name="other", files=False)
    [task] = cats_leased(session_factory, pets, people.ann, LABEL)
    cases = {
        "needs the new class_id": verdict(task, Verdict.RELABEL),
        "class_id goes only with a relabel": verdict(
            task, Verdict.ACCEPT, class_id=pets.classes["dog"]
        ),
        "not in the task's dataset": verdict(task, Verdict.RELABEL, class_id=other.classes["dog"]),
        "the given class": verdict(task, Verdict.RELABEL, class_id=pets.classes["cat"]),
    }
    for message, decision in cases.items():
        assert message in refused(Invalid, decide, session_factory, people.ann, decision).message
    unknown = verdict(task, Verdict.RELABEL, class_id=424_242)
    assert refused(Invalid, decide, session_factory, people.ann, unknown).details["class_ids"] == [
        424_242
    ]
    assert decision_count(session_factory) == 0


def test_relabel_and_accept_record_the_confirmed_class(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    first, second = cats_leased(session_factory, pets, people.ann, LABEL, n=2)
    records = decide(
        session_factory,
        people.ann,
        verdict(first, Verdict.ACCEPT),
        verdict(second, Verdict.RELABEL, class_id=pets.classes["dog"]),
    )
    assert [r.class_id for r in records] == [pets.classes["cat"], pets.classes["dog"]]


@pytest.mark.parametrize(
    "batch",
    [0, decision_service.MAX_DECISIONS + 1],
    ids=["empty", "oversized"],
)
def test_empty_and_oversized_decision_batches_are_refused(
    session_factory: sessionmaker[Session], people: People, batch: int
) -> None:
    decisions = [DecisionInput(i, 1, Verdict.JUNK, f"k{i}") for i in range(batch)]
    refused(Invalid, decide, session_factory, people.ann, *decisions)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seconds": -1.0}, "seconds"),
        ({"seconds": float("inf")}, "seconds"),
        ({"idempotency_key": ""}, "idempotency keys"),
        ({"idempotency_key": "x" * 65}, "idempotency keys"),
    ],
)
def test_bad_seconds_and_keys_are_refused(
    session_factory: sessionmaker[Session],
    pets: Pets,
    people: People,
    change: dict[str, object],
    message: str,
) -> None:
    [task] = cats_leased(session_factory, pets, people.ann, JUNK)
    fields = {"idempotency_key": "k", "seconds": 1.0, **change}
    decision = DecisionInput(task.id, task.lease_version, Verdict.JUNK, **fields)  # type: ignore[arg-type]
    assert message in refused(Invalid, decide, session_factory, people.ann, decision).message


def test_a_task_twice_in_one_batch_is_refused(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    [task] = cats_leased(session_factory, pets, people.ann, JUNK)
    error = refused(
        Invalid,
        decide,
        session_factory,
        people.ann,
        verdict(task, Verdict.JUNK, key="a"),
        verdict(task, Verdict.NOT_JUNK, key="b"),
    )
    assert "twice" in error.message


def test_a_double_submit_racing_itself_is_recorded_once(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    page = cats_leased(session_factory, pets, people.ann, JUNK, n=6)
    batch = [verdict(task, Verdict.JUNK, key=f"twin-{task.id}") for task in page]
    start = threading.Barrier(2)
    answers: list[list[DecisionRecord]] = []

    def submit() -> None:
        start.wait()
        answers.append(decide(session_factory, people.ann, *batch))

    twins = [threading.Thread(target=submit) for _ in range(2)]
    for twin in twins:
        twin.start()
    for twin in twins:
        twin.join(timeout=60)
    assert len(answers) == 2
    assert answers[0] == answers[1]
    assert decision_count(session_factory) == 6
