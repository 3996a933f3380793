"""The review queue's rules: queueing, leases, decisions, undo (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.errors import AppError, Forbidden, Invalid, NotFound
from app.models import (
    Dataset,
    ReviewDecision,
    ReviewTask,
    TaskKind,
    TaskState,
    User,
    Verdict,
    utcnow,
)
from app.review import service
from app.review.schemas import DecisionInput, DecisionRecord, LeasedTask, Suggestion, TaskItem
from tests.app.review.conftest import People
from tests.app.review.factories import Pets, lease, make_pets, queue

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


def decide(
    factory: sessionmaker[Session], user: User, *decisions: DecisionInput
) -> list[DecisionRecord]:
    with transaction(factory) as session:
        return service.decide(session, user=user, decisions=list(decisions))


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


# --- creating tasks -----------------------------------------------------------------------------


def test_create_tasks_queues_one_pending_task_per_sample(
    session_factory: sessionmaker[Session], pets: Pets
) -> None:
    ids = create(session_factory, pets, JUNK, pets.samples["cat"])
    assert len(ids) == len(pets.samples["cat"])
    task = task_state(session_factory, ids[0])
    assert (task.state, task.kind, task.source, task.lease_version) == (
        TaskState.PENDING,
        JUNK,
        "test round",
        0,
    )


def test_create_tasks_is_idempotent_per_kind_sample_and_source(
    session_factory: sessionmaker[Session], pets: Pets
) -> None:
    samples = pets.samples["cat"]
    create(session_factory, pets, JUNK, samples[:3])
    with transaction(session_factory) as session:
        dataset = session.get_one(Dataset, pets.dataset_id)
        again = service.create_tasks(
            session,
            dataset=dataset,
            kind=JUNK,
            items=[TaskItem(sample_id=s) for s in samples],
            source="test round",
        )
        other_round = service.create_tasks(
            session,
            dataset=dataset,
            kind=JUNK,
            items=[TaskItem(sample_id=samples[0])],
            source="junk iteration 2",
        )
    assert (again.created, again.skipped) == (len(samples) - 3, 3)
    assert (other_round.created, other_round.skipped) == (1, 0)


def test_create_class_tasks_is_idempotent_too(
    session_factory: sessionmaker[Session], pets: Pets
) -> None:
    classes = list(pets.classes.values())
    assert len(create(session_factory, pets, TaskKind.CLASS_CHECK, classes)) == 3
    assert create(session_factory, pets, TaskKind.CLASS_CHECK, classes) == []


def test_label_check_tasks_keep_their_suggestions(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    dog, bird = pets.classes["dog"], pets.classes["bird"]
    create(
        session_factory,
        pets,
        LABEL,
        [pets.samples["cat"][0]],
        suggestions=[[(dog, 0.7), (bird, 0.2)]],
    )
    [task] = lease(session_factory, people.ann, LABEL)
    assert task.suggestions == (Suggestion(dog, 0.7), Suggestion(bird, 0.2))
    assert task.given_class_id == pets.classes["cat"]


@pytest.mark.parametrize(
    ("kind", "item", "message"),
    [
        (JUNK, TaskItem(), "needs sample_id"),
        (JUNK, TaskItem(sample_id=1, class_id=1), "no class_id"),
        (TaskKind.CLASS_CHECK, TaskItem(sample_id=1), "needs class_id"),
        (JUNK, TaskItem(sample_id=1, suggestions=(Suggestion(1, 0.5),)), "only label_check"),
        (LABEL, TaskItem(sample_id=1, suggestions=(Suggestion(1, 1.5),)), "[0, 1]"),
        (LABEL, TaskItem(sample_id=1, priority=float("nan")), "finite"),
    ],
)
def test_create_tasks_refuses_malformed_items(
    session: Session, pets: Pets, kind: TaskKind, item: TaskItem, message: str
) -> None:
    dataset = session.get_one(Dataset, pets.dataset_id)
    error = refused(
        Invalid, service.create_tasks, session, dataset=dataset, kind=kind, items=[item], source="x"
    )
    assert message in error.message


def test_create_tasks_refuses_empty_and_oversized_batches(session: Session, pets: Pets) -> None:
    dataset = session.get_one(Dataset, pets.dataset_id)
    items = [TaskItem(sample_id=s) for s in pets.all_samples]
    assert (
        "empty"
        in refused(
            Invalid, service.create_tasks, session, dataset=dataset, kind=JUNK, items=[], source="x"
        ).message
    )
    error = refused(
        Invalid,
        service.create_tasks,
        session,
        dataset=dataset,
        kind=JUNK,
        items=items,
        source="x",
        max_items=3,
    )
    assert "at most 3" in error.message
    assert session.scalar(select(func.count()).select_from(ReviewTask)) == 0


def test_create_tasks_refuses_samples_and_classes_of_another_dataset(
    session_factory: sessionmaker[Session], pets: Pets, tmp_path: object
) -> None:
    with transaction(session_factory) as session:
        other = make_pets(session, pets.root.parent / "other", name="other", files=False)
    with transaction(session_factory) as session:
        dataset = session.get_one(Dataset, pets.dataset_id)
        foreign_sample = other.samples["cat"][0]
        error = refused(
            Invalid,
            service.create_tasks,
            session,
            dataset=dataset,
            kind=JUNK,
            items=[TaskItem(sample_id=pets.samples["cat"][0]), TaskItem(sample_id=foreign_sample)],
            source="x",
        )
        assert error.details["sample_ids"] == [foreign_sample]
        error = refused(
            Invalid,
            service.create_tasks,
            session,
            dataset=dataset,
            kind=TaskKind.CLASS_CHECK,
            items=[TaskItem(class_id=other.classes["dog"])],
            source="x",
        )
        assert error.details["class_ids"] == [other.classes["dog"]]
        error = refused(
            Invalid,
            service.create_tasks,
            session,
            dataset=dataset,
            kind=LABEL,
            items=[
                TaskItem(
                    sample_id=pets.samples["cat"][0],
                    suggestions=(Suggestion(other.classes["dog"], 0.5),),
                )
            ],
            source="x",
        )
        assert "suggested class ids" in error.message
        assert session.scalar(select(func.count()).select_from(ReviewTask)) == 0


# --- leasing ------------------------------------------------------------------------------------


def test_lease_hands_out_highest_priority_first(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    samples = pets.samples["cat"][:4]
    ids = create(session_factory, pets, JUNK, samples, priorities=[0.1, 0.9, 0.5, 0.9])
    leased = lease(session_factory, people.ann, JUNK, n=3)
    assert [task.id for task in leased] == [ids[3], ids[1], ids[2]]
    assert all(task.lease_version == 1 for task in leased)


def test_leases_are_exclusive(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, JUNK, pets.samples["cat"])
    first = lease(session_factory, people.ann, JUNK, n=4)
    second = lease(session_factory, people.bob, JUNK, n=4)
    assert len(first) == 4
    assert len(second) == 2
    assert not {t.id for t in first} & {t.id for t in second}
    assert lease(session_factory, people.bob, JUNK, n=4, exclude=[t.id for t in second]) == []


def test_lease_gives_back_own_live_leases_first(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, JUNK, pets.samples["cat"])
    held = lease(session_factory, people.ann, JUNK, n=2)
    again = lease(session_factory, people.ann, JUNK, n=2)
    assert [t.id for t in again] == [t.id for t in held]
    assert [t.lease_version for t in again] == [1, 1]
    more = lease(session_factory, people.ann, JUNK, n=2, exclude=[t.id for t in held])
    assert not {t.id for t in more} & {t.id for t in held}


def test_lease_filters_by_kind_and_dataset(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    with transaction(session_factory) as session:
        other = make_pets(session, pets.root.parent / "other", name="other", files=False)
    create(session_factory, pets, JUNK, pets.samples["cat"][:1])
    create(session_factory, pets, LABEL, pets.samples["dog"][:1])
    [task] = lease(session_factory, people.ann, LABEL, n=5, dataset_id=pets.dataset_id)
    assert task.kind is LABEL
    assert lease(session_factory, people.ann, JUNK, n=5, dataset_id=other.dataset_id) == []


def test_lease_refuses_bad_sizes_and_unknown_dataset(
    session: Session, pets: Pets, people: People
) -> None:
    for n in (0, service.MAX_LEASE + 1):
        refused(Invalid, service.lease_tasks, session, user=people.ann, kind=JUNK, n=n)
    refused(NotFound, service.lease_tasks, session, user=people.ann, kind=JUNK, dataset_id=999_999)


def test_expired_lease_returns_task_to_queue(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, JUNK, pets.samples["cat"][:1])
    [mine] = lease(session_factory, people.ann, JUNK, lease_for=timedelta(minutes=1))
    assert lease(session_factory, people.bob, JUNK) == []
    later = utcnow() + timedelta(minutes=2)
    [theirs] = lease(session_factory, people.bob, JUNK, now=later)
    assert theirs.id == mine.id
    assert theirs.lease_version == mine.lease_version + 1


def test_released_lease_is_free_at_once_and_its_owner_may_still_decide(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, JUNK, pets.samples["cat"][:2])
    mine = lease(session_factory, people.ann, JUNK, n=2)
    with transaction(session_factory) as session:
        released = service.release_leases(session, user=people.ann, task_ids=[mine[0].id])
        # Another's task, or one released already, is not released (again).
        assert service.release_leases(session, user=people.bob, task_ids=[mine[1].id]) == []
        assert service.release_leases(session, user=people.ann, task_ids=[mine[0].id]) == []
    assert released == [mine[0].id]
    [record] = decide(session_factory, people.ann, verdict(mine[0], Verdict.JUNK))
    assert record.task_id == mine[0].id
    assert lease(session_factory, people.bob, JUNK) == []  # mine[1] is still held


def test_renewal_extends_live_leases_takes_back_lapsed_ones_and_reports_the_lost(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, JUNK, pets.samples["cat"][:3])
    kept, lapsed, lost = lease(session_factory, people.ann, JUNK, n=3)
    with transaction(session_factory) as session:
        service.release_leases(session, user=people.ann, task_ids=[lapsed.id, lost.id])
    [taken] = lease(session_factory, people.bob, JUNK, n=1)
    lost, lapsed = (lost, lapsed) if taken.id == lost.id else (lapsed, lost)
    later = utcnow() + timedelta(seconds=30)
    with transaction(session_factory) as session:
        renewal = service.renew_leases(
            session,
            user=people.ann,
            task_ids=[kept.id, lapsed.id, lost.id],
            lease_for=timedelta(minutes=1),
            now=later,
        )
    assert renewal.renewed == sorted([kept.id, lapsed.id])
    assert renewal.lost == [lost.id]
    assert renewal.lease_expires_at == later + timedelta(minutes=1)
    for task in (kept, lapsed):
        row = task_state(session_factory, task.id)
        assert row.lease_owner_id == people.ann.id
        assert row.lease_version == task.lease_version  # decisions made under it stay valid
    assert [t.id for t in lease(session_factory, people.bob, JUNK, n=3, now=later)] == [taken.id]


def test_renewal_and_release_refuse_too_many_tasks(session: Session, people: People) -> None:
    ids = list(range(1, service.MAX_EXCLUDE + 2))
    refused(Invalid, service.release_leases, session, user=people.ann, task_ids=ids)
    refused(
        Invalid,
        service.renew_leases,
        session,
        user=people.ann,
        task_ids=ids,
        lease_for=timedelta(minutes=1),
    )


# --- deciding -----------------------------------------------------------------------------------


def test_decision_marks_task_done(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, JUNK, pets.samples["cat"][:1])
    [task] = lease(session_factory, people.ann, JUNK)
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
    create(session_factory, pets, JUNK, pets.samples["cat"][:2])
    tasks = lease(session_factory, people.ann, JUNK, n=2)
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
    create(session_factory, pets, JUNK, pets.samples["cat"][:2])
    tasks = lease(session_factory, people.ann, JUNK, n=2)
    decide(session_factory, people.ann, verdict(tasks[0], Verdict.JUNK, key="a"))
    error = refused(
        service.KeyReused,
        decide,
        session_factory,
        people.ann,
        verdict(tasks[1], Verdict.JUNK, key="a"),
    )
    assert error.status_code == 422
    refused(
        service.KeyReused,
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
    create(session_factory, pets, JUNK, pets.samples["cat"][:2])
    [mine, kept] = lease(session_factory, people.ann, JUNK, n=2, lease_for=timedelta(seconds=30))
    later = utcnow() + timedelta(minutes=1)
    with transaction(session_factory) as session:  # ann renews only one of the two
        service.lease_tasks(session, user=people.ann, kind=JUNK, n=1, now=utcnow())
    taken = lease(session_factory, people.bob, JUNK, n=2, now=later)
    lost_id = next(t.id for t in taken)
    lost = mine if mine.id == lost_id else kept
    other = kept if lost is mine else mine
    error = refused(
        service.LeaseLost,
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
        [record] = service.decide(
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
        service.NotYourLease, decide, session_factory, people.ann, verdict(theirs, Verdict.JUNK)
    )
    assert isinstance(error, Forbidden)
    with transaction(session_factory) as session:
        never_leased = session.scalars(
            select(ReviewTask.id).where(ReviewTask.state == TaskState.PENDING)
        ).one()
    pending = DecisionInput(never_leased, 0, Verdict.JUNK, "k")
    refused(service.NotYourLease, decide, session_factory, people.ann, pending)
    assert decision_count(session_factory) == 0


def test_decided_task_cannot_be_decided_again(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, JUNK, pets.samples["cat"][:1])
    [task] = lease(session_factory, people.ann, JUNK)
    decide(session_factory, people.ann, verdict(task, Verdict.JUNK, key="a"))
    error = refused(
        service.AlreadyDecided,
        decide,
        session_factory,
        people.ann,
        verdict(task, Verdict.NOT_JUNK, key="b"),
    )
    assert error.status_code == 409


def test_unknown_task_ids_get_404_and_nothing_is_written(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, JUNK, pets.samples["cat"][:1])
    [task] = lease(session_factory, people.ann, JUNK)
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
    create(session_factory, pets, JUNK, pets.samples["cat"][:1])
    [task] = lease(session_factory, people.ann, JUNK)
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
    create(session_factory, pets, LABEL, pets.samples["cat"][:1])
    [task] = lease(session_factory, people.ann, LABEL)
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
    create(session_factory, pets, LABEL, pets.samples["cat"][:2])
    first, second = lease(session_factory, people.ann, LABEL, n=2)
    records = decide(
        session_factory,
        people.ann,
        verdict(first, Verdict.ACCEPT),
        verdict(second, Verdict.RELABEL, class_id=pets.classes["dog"]),
    )
    assert [r.class_id for r in records] == [pets.classes["cat"], pets.classes["dog"]]


@pytest.mark.parametrize(
    "batch",
    [0, service.MAX_DECISIONS + 1],
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
    create(session_factory, pets, JUNK, pets.samples["cat"][:1])
    [task] = lease(session_factory, people.ann, JUNK)
    fields = {"idempotency_key": "k", "seconds": 1.0, **change}
    decision = DecisionInput(task.id, task.lease_version, Verdict.JUNK, **fields)  # type: ignore[arg-type]
    assert message in refused(Invalid, decide, session_factory, people.ann, decision).message


def test_a_task_twice_in_one_batch_is_refused(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, JUNK, pets.samples["cat"][:1])
    [task] = lease(session_factory, people.ann, JUNK)
    error = refused(
        Invalid,
        decide,
        session_factory,
        people.ann,
        verdict(task, Verdict.JUNK, key="a"),
        verdict(task, Verdict.NOT_JUNK, key="b"),
    )
    assert "twice" in error.message


# --- undo ---------------------------------------------------------------------------------------


def undo(
    factory: sessionmaker[Session], user: User, decision_id: int, key: str = "undo-1"
) -> service.UndoResult:
    with transaction(factory) as session:
        return service.undo(session, user=user, decision_id=decision_id, idempotency_key=key)


def test_undo_appends_a_superseding_decision_and_reopens_the_task_for_the_same_annotator(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, LABEL, pets.samples["cat"][:1])
    [task] = lease(session_factory, people.ann, LABEL)
    [record] = decide(session_factory, people.ann, verdict(task, Verdict.JUNK))
    result = undo(session_factory, people.ann, record.id)
    assert result.decision.verdict is Verdict.UNDO
    assert result.decision.supersedes_id == record.id
    assert result.task.id == task.id
    assert result.task.lease_version == task.lease_version + 1
    reopened = task_state(session_factory, task.id)
    assert (reopened.state, reopened.lease_owner_id) == (TaskState.LEASED, people.ann.id)
    assert lease(session_factory, people.bob, LABEL) == []
    assert decision_count(session_factory) == 2
    [again] = decide(session_factory, people.ann, verdict(result.task, Verdict.ACCEPT))
    assert again.verdict is Verdict.ACCEPT


def test_undo_sent_twice_with_the_same_key_is_recorded_once(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, JUNK, pets.samples["cat"][:1])
    [task] = lease(session_factory, people.ann, JUNK)
    [record] = decide(session_factory, people.ann, verdict(task, Verdict.JUNK))
    first = undo(session_factory, people.ann, record.id)
    second = undo(session_factory, people.ann, record.id)
    assert second.decision == first.decision
    assert decision_count(session_factory) == 2


def test_undo_refuses_other_users_decisions_undos_and_undone_decisions(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, JUNK, pets.samples["cat"][:1])
    [task] = lease(session_factory, people.ann, JUNK)
    [record] = decide(session_factory, people.ann, verdict(task, Verdict.JUNK))
    refused(Forbidden, undo, session_factory, people.bob, record.id)
    result = undo(session_factory, people.ann, record.id)
    refused(service.AlreadyUndone, undo, session_factory, people.ann, record.id, "undo-2")
    refused(Invalid, undo, session_factory, people.ann, result.decision.id, "undo-3")
    refused(NotFound, undo, session_factory, people.ann, 999_999, "undo-4")
    assert decision_count(session_factory) == 2


# --- verdicts and history -----------------------------------------------------------------------


def test_current_verdict_is_the_latest_decision_no_undo_withdrew(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    sample = pets.samples["cat"][0]
    create(session_factory, pets, LABEL, [sample])
    [task] = lease(session_factory, people.ann, LABEL)
    [first] = decide(session_factory, people.ann, verdict(task, Verdict.JUNK))

    def current() -> Verdict | None:
        with transaction(session_factory) as session:
            found = service.current_verdicts(session, dataset_id=pets.dataset_id)
        return found[sample].verdict if sample in found else None

    assert current() is Verdict.JUNK
    reopened = undo(session_factory, people.ann, first.id).task
    assert current() is None
    decide(
        session_factory,
        people.ann,
        verdict(reopened, Verdict.RELABEL, class_id=pets.classes["dog"]),
    )
    assert current() is Verdict.RELABEL
    with transaction(session_factory) as session:
        found = service.current_verdicts(session, sample_ids=[sample], kinds=[JUNK])
    assert found == {}


def test_sample_history_keeps_every_decision_in_order(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    sample = pets.samples["cat"][0]
    create(session_factory, pets, LABEL, [sample])
    [task] = lease(session_factory, people.ann, LABEL)
    [first] = decide(session_factory, people.ann, verdict(task, Verdict.JUNK))
    reopened = undo(session_factory, people.ann, first.id).task
    decide(session_factory, people.ann, verdict(reopened, Verdict.UNSURE))
    with transaction(session_factory) as session:
        history = service.sample_history(session, sample)
    assert [(h.verdict, h.withdrawn) for h in history] == [
        (Verdict.JUNK, True),
        (Verdict.UNDO, False),
        (Verdict.UNSURE, False),
    ]
    assert {h.username for h in history} == {"ann"}
    assert history[0].source == "test round"


def test_a_double_submit_racing_itself_is_recorded_once(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, JUNK, pets.samples["cat"])
    page = lease(session_factory, people.ann, JUNK, n=6)
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
