"""Queue statistics, second opinions, audits and what the review pages are built from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.errors import Invalid
from app.models import Dataset, TaskKind, User, Verdict
from app.review import service
from app.review.schemas import DecisionInput, LeasedTask
from tests.app.review.conftest import People
from tests.app.review.factories import Pets, lease, queue

JUNK = TaskKind.JUNK_CHECK
LABEL = TaskKind.LABEL_CHECK
NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


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
        service.decide(
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


def create(factory: sessionmaker[Session], pets: Pets, kind: TaskKind, subjects: list[int]) -> None:
    with transaction(factory) as session:
        queue(session, pets, kind, subjects)


def test_queue_counts_count_expired_leases_as_pending(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, JUNK, pets.samples["cat"])
    page = lease(session_factory, people.ann, JUNK, n=4, now=NOON, lease_for=timedelta(minutes=5))
    decide_all(session_factory, people.ann, page[:1], [Verdict.JUNK], now=NOON)
    with transaction(session_factory) as session:
        during = service.queue_counts(session, now=NOON + timedelta(minutes=1))
        after = service.queue_counts(session, now=NOON + timedelta(minutes=10))
    assert [(q.kind, q.pending, q.leased, q.done) for q in during] == [(JUNK, 2, 3, 1)]
    assert [(q.pending, q.leased, q.done) for q in after] == [(5, 0, 1)]


def test_open_queues_list_only_queues_with_work_left(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, JUNK, pets.samples["cat"][:2])
    create(session_factory, pets, LABEL, pets.samples["dog"][:1])
    [task] = lease(session_factory, people.ann, LABEL)
    decide_all(session_factory, people.ann, [task], [Verdict.ACCEPT])
    lease(session_factory, people.bob, JUNK)
    with transaction(session_factory) as session:
        queues = service.open_queues(session)
    assert [(q.dataset_name, q.kind, q.pending, q.leased) for q in queues] == [("pets", JUNK, 1, 1)]


def test_stats_give_decisions_per_annotator_per_hour_and_median_seconds(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, JUNK, pets.all_samples)
    ann_page = lease(session_factory, people.ann, JUNK, n=4, now=NOON)
    decide_all(
        session_factory,
        people.ann,
        ann_page[:3],
        [Verdict.JUNK] * 3,
        seconds=[1.0, 2.0, 10.0],
        now=NOON + timedelta(minutes=5),
    )
    decide_all(
        session_factory,
        people.ann,
        ann_page[3:],
        [Verdict.NOT_JUNK],
        seconds=[3.0],
        now=NOON + timedelta(hours=1, minutes=5),
    )
    bob_page = lease(session_factory, people.bob, JUNK, n=1, now=NOON)
    decide_all(session_factory, people.bob, bob_page, [Verdict.JUNK], seconds=[4.0], now=NOON)
    with transaction(session_factory) as session:
        stats = service.queue_stats(session, now=NOON + timedelta(hours=2))
    ann, bob = stats.annotators
    assert (ann.username, ann.decisions, ann.active_hours, ann.decisions_per_hour) == (
        "ann",
        4,
        2,
        2.0,
    )
    assert [(h.hour, h.decisions) for h in ann.by_hour] == [
        (NOON, 3),
        (NOON + timedelta(hours=1), 1),
    ]
    assert ann.median_seconds == 2.5
    assert (bob.decisions, bob.median_seconds) == (1, 4.0)
    assert stats.median_seconds == 3.0


def test_undo_rows_are_not_counted_as_decisions(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, JUNK, pets.samples["cat"][:1])
    [task] = lease(session_factory, people.ann, JUNK)
    decide_all(session_factory, people.ann, [task], [Verdict.JUNK])
    with transaction(session_factory) as session:
        [record] = service.sample_history(session, task.sample_id or 0)
        service.undo(session, user=people.ann, decision_id=record.decision_id, idempotency_key="u")
    with transaction(session_factory) as session:
        stats = service.queue_stats(session)
        progress = service.progress(session, user=people.ann)
    assert [a.decisions for a in stats.annotators] == [1]
    assert progress.decisions == 1


def test_agreement_compares_the_standing_verdicts_of_both_opinions(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    dog = pets.classes["dog"]
    create(session_factory, pets, LABEL, pets.samples["cat"][:4])
    first = lease(session_factory, people.ann, LABEL, n=4)
    decide_all(
        session_factory,
        people.ann,
        first,
        [Verdict.ACCEPT, Verdict.JUNK, Verdict.RELABEL, Verdict.RELABEL],
        class_ids=[None, None, dog, dog],
    )
    with transaction(session_factory) as session:
        dataset = session.get_one(Dataset, pets.dataset_id)
        asked = service.request_second_opinions(
            session, dataset=dataset, kind=LABEL, fraction=1.0, seed=3
        )
    assert asked.created == 4
    second = lease(session_factory, people.bob, LABEL, n=4)
    by_sample = {t.sample_id: t for t in second}
    ordered = [by_sample[t.sample_id] for t in first]
    bird = pets.classes["bird"]
    decide_all(
        session_factory,
        people.bob,
        ordered,
        [Verdict.ACCEPT, Verdict.UNSURE, Verdict.RELABEL, Verdict.RELABEL],
        class_ids=[None, None, dog, bird],
    )
    with transaction(session_factory) as session:
        [agreement] = service.agreement(session)
    assert (agreement.kind, agreement.pairs, agreement.agreed) == (LABEL, 4, 2)
    assert agreement.rate == 0.5


def test_second_opinions_are_asked_once_and_never_of_the_first_decider(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, JUNK, pets.samples["cat"])
    page = lease(session_factory, people.ann, JUNK, n=6)
    decide_all(session_factory, people.ann, page, [Verdict.NOT_JUNK] * 6)
    with transaction(session_factory) as session:
        dataset = session.get_one(Dataset, pets.dataset_id)
        first = service.request_second_opinions(
            session, dataset=dataset, kind=JUNK, fraction=0.5, seed=1
        )
        second = service.request_second_opinions(
            session, dataset=dataset, kind=JUNK, fraction=1.0, seed=1
        )
        with pytest.raises(Invalid):
            service.request_second_opinions(session, dataset=dataset, kind=JUNK, fraction=0)
    assert (first.created, second.created) == (3, 3)
    assert lease(session_factory, people.ann, JUNK, n=10) == []
    assert len(lease(session_factory, people.bob, JUNK, n=10)) == 6


def test_progress_counts_todays_decisions_by_kind(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, JUNK, pets.samples["cat"][:3])
    create(session_factory, pets, LABEL, pets.samples["dog"][:1])
    yesterday = NOON - timedelta(days=1)
    junk = lease(session_factory, people.ann, JUNK, n=3, now=yesterday)
    decide_all(session_factory, people.ann, junk[:1], [Verdict.JUNK], now=yesterday)
    decide_all(session_factory, people.ann, junk[1:], [Verdict.JUNK] * 2, seconds=[2, 4], now=NOON)
    label = lease(session_factory, people.ann, LABEL, now=NOON)
    decide_all(session_factory, people.ann, label, [Verdict.UNSURE], seconds=[9], now=NOON)
    with transaction(session_factory) as session:
        progress = service.progress(session, user=people.ann, now=NOON + timedelta(hours=1))
    assert progress.decisions == 3
    assert progress.by_kind == {JUNK: 2, LABEL: 1}
    assert progress.median_seconds == 4.0


def test_audit_repeats_with_the_same_seed_and_skips_samples_judged_junk(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, JUNK, pets.samples["cat"])
    page = lease(session_factory, people.ann, JUNK, n=6)
    decide_all(session_factory, people.ann, page, [Verdict.JUNK] * 6)
    with transaction(session_factory) as session:
        dataset = session.get_one(Dataset, pets.dataset_id)
        created, seed, source = service.create_audit(session, dataset=dataset, n=100, seed=5)
        again, _, _ = service.create_audit(session, dataset=dataset, n=100, seed=5)
    assert (created.created, seed, source) == (10, 5, "audit seed 5")
    assert (again.created, again.skipped) == (0, 10)
    audited = lease(session_factory, people.bob, TaskKind.JUNK_AUDIT, n=20)
    assert {t.sample_id for t in audited} == set(pets.samples["dog"] + pets.samples["bird"])


def test_references_prefer_samples_a_human_confirmed_in_the_class(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    dog = pets.classes["dog"]
    cat_sample = pets.samples["cat"][0]
    create(session_factory, pets, LABEL, [cat_sample])
    tasks = lease(session_factory, people.ann, LABEL)
    decide_all(session_factory, people.ann, tasks, [Verdict.RELABEL], class_ids=[dog])
    with transaction(session_factory) as session:
        refs = service.references(session, [dog], per_class=3, exclude_samples={99})
    assert refs[dog].sample_ids == [cat_sample, *pets.samples["dog"][:2]]


def test_a_label_batch_names_its_classes_and_never_shows_its_own_samples_as_references(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    dog, cat = pets.classes["dog"], pets.classes["cat"]
    subject = pets.samples["cat"][0]
    with transaction(session_factory) as session:
        queue(session, pets, LABEL, [subject], suggestions=[[(dog, 0.8), (cat, 0.1)]])
    with transaction(session_factory) as session:
        dataset = session.get_one(Dataset, pets.dataset_id)
        batch = service.lease_batch(
            session, user=people.ann, dataset=dataset, kind=LABEL, n=3, references_per_class=4
        )
    assert batch.class_names == {dog: "dog", cat: "cat"}
    assert batch.references[cat].sample_ids == pets.samples["cat"][1:5]
    assert batch.references[dog].sample_ids == pets.samples["dog"][:4]


def test_a_class_batch_carries_the_class_size_and_some_of_its_images(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    bird = pets.classes["bird"]
    create(session_factory, pets, TaskKind.CLASS_CHECK, [bird])
    with transaction(session_factory) as session:
        dataset = session.get_one(Dataset, pets.dataset_id)
        batch = service.lease_batch(
            session,
            user=people.ann,
            dataset=dataset,
            kind=TaskKind.CLASS_CHECK,
            n=3,
            class_grid=3,
        )
    assert batch.class_names == {bird: "bird"}
    assert batch.class_sizes == {bird: 4}
    assert batch.class_samples == {bird: pets.samples["bird"][:3]}
