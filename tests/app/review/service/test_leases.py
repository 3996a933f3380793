"""Leasing review tasks: priority, exclusivity, expiry, renewal and release; leased batches with
what the pages show (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.errors import Invalid, NotFound
from app.models import Dataset, TaskKind, Verdict, utcnow
from app.review.records import SampleImage
from app.review.service import leases as lease_service
from tests.app.review.conftest import People
from tests.app.review.factories import Pets, lease, make_pets, queue
from tests.app.review.service.helpers import (
    JUNK,
    LABEL,
    cats_leased,
    create,
    decide,
    decide_all,
    refused,
    task_state,
    verdict,
)


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
    for n in (0, lease_service.MAX_LEASE + 1):
        refused(Invalid, lease_service.lease_tasks, session, user=people.ann, kind=JUNK, n=n)
    refused(
        NotFound, lease_service.lease_tasks, session, user=people.ann, kind=JUNK, dataset_id=999_999
    )


def test_expired_lease_returns_task_to_queue(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    [mine] = cats_leased(session_factory, pets, people.ann, JUNK, lease_for=timedelta(minutes=1))
    assert lease(session_factory, people.bob, JUNK) == []
    later = utcnow() + timedelta(minutes=2)
    [theirs] = lease(session_factory, people.bob, JUNK, now=later)
    assert theirs.id == mine.id
    assert theirs.lease_version == mine.lease_version + 1


def test_released_lease_is_free_at_once_and_its_owner_may_still_decide(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    mine = cats_leased(session_factory, pets, people.ann, JUNK, n=2)
    with transaction(session_factory) as session:
        released = lease_service.release_leases(session, user=people.ann, task_ids=[mine[0].id])
        # Another's task, or one released already, is not released (again).
        assert lease_service.release_leases(session, user=people.bob, task_ids=[mine[1].id]) == []
        assert lease_service.release_leases(session, user=people.ann, task_ids=[mine[0].id]) == []
    assert released == [mine[0].id]
    [record] = decide(session_factory, people.ann, verdict(mine[0], Verdict.JUNK))
    assert record.task_id == mine[0].id
    assert lease(session_factory, people.bob, JUNK) == []  # mine[1] is still held


def test_renewal_extends_live_leases_takes_back_lapsed_ones_and_reports_the_lost(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    kept, lapsed, lost = cats_leased(session_factory, pets, people.ann, JUNK, n=3)
    with transaction(session_factory) as session:
        lease_service.release_leases(session, user=people.ann, task_ids=[lapsed.id, lost.id])
    [taken] = lease(session_factory, people.bob, JUNK, n=1)
    lost, lapsed = (lost, lapsed) if taken.id == lost.id else (lapsed, lost)
    later = utcnow() + timedelta(seconds=30)
    with transaction(session_factory) as session:
        renewal = lease_service.renew_leases(
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
    ids = list(range(1, lease_service.MAX_EXCLUDE + 2))
    refused(Invalid, lease_service.release_leases, session, user=people.ann, task_ids=ids)
    refused(
        Invalid,
        lease_service.renew_leases,
        session,
        user=people.ann,
        task_ids=ids,
        lease_for=timedelta(minutes=1),
    )


def test_references_prefer_samples_a_human_confirmed_in_the_class(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    dog = pets.classes["dog"]
    cat_sample = pets.samples["cat"][0]
    create(session_factory, pets, LABEL, [cat_sample])
    tasks = lease(session_factory, people.ann, LABEL)
    decide_all(session_factory, people.ann, tasks, [Verdict.RELABEL], class_ids=[dog])
    with transaction(session_factory) as session:
        refs = lease_service.references(session, [dog], per_class=3, exclude_samples={99})
    assert refs[dog].sample_ids == [cat_sample, *pets.samples["dog"][:2]]
    assert refs[dog].samples[0] == SampleImage(cat_sample, pets.sha256[cat_sample])


def test_a_label_batch_names_its_classes_and_never_shows_its_own_samples_as_references(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    dog, cat = pets.classes["dog"], pets.classes["cat"]
    subject = pets.samples["cat"][0]
    with transaction(session_factory) as session:
        queue(session, pets, LABEL, [subject], suggestions=[[(dog, 0.8), (cat, 0.1)]])
    with transaction(session_factory) as session:
        dataset = session.get_one(Dataset, pets.dataset_id)
        batch = lease_service.lease_batch(
            session, user=people.ann, dataset=dataset, kind=LABEL, n=3, references_per_class=4
        )
    assert batch.class_names == {dog: "dog", cat: "cat"}
    assert batch.references[cat].sample_ids == pets.samples["cat"][1:5]
    assert batch.references[dog].sample_ids == pets.samples["dog"][:4]
    assert batch.tasks[0].sample_sha256 == pets.sha256[subject]
    assert all(ref.sha256 == pets.sha256[ref.id] for ref in batch.references[cat].samples)


def test_a_class_batch_carries_the_class_size_and_some_of_its_images(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    bird = pets.classes["bird"]
    create(session_factory, pets, TaskKind.CLASS_CHECK, [bird])
    with transaction(session_factory) as session:
        dataset = session.get_one(Dataset, pets.dataset_id)
        batch = lease_service.lease_batch(
            session,
            user=people.ann,
            dataset=dataset,
            kind=TaskKind.CLASS_CHECK,
            n=3,
            class_grid=3,
        )
    assert batch.class_names == {bird: "bird"}
    assert batch.class_sizes == {bird: 4}
    assert batch.class_samples == {
        bird: [SampleImage(i, pets.sha256[i]) for i in pets.samples["bird"][:3]]
    }
