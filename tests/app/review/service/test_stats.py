"""Queue statistics: counts per queue, annotators' pace, agreement, progress today."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.models import Dataset, Verdict
from app.review.service import decisions as decision_service
from app.review.service import stats as stats_service
from app.review.service import tasks as task_service
from app.review.service import verdicts as verdict_service
from tests.app.review.conftest import People
from tests.app.review.factories import Pets, lease
from tests.app.review.service.helpers import JUNK, LABEL, cats_leased, create, decide_all

NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def test_queue_counts_count_expired_leases_as_pending(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    create(session_factory, pets, JUNK, pets.samples["cat"])
    page = lease(session_factory, people.ann, JUNK, n=4, now=NOON, lease_for=timedelta(minutes=5))
    decide_all(session_factory, people.ann, page[:1], [Verdict.JUNK], now=NOON)
    with transaction(session_factory) as session:
        during = stats_service.queue_counts(session, now=NOON + timedelta(minutes=1))
        after = stats_service.queue_counts(session, now=NOON + timedelta(minutes=10))
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
        queues = stats_service.open_queues(session)
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
        stats = stats_service.queue_stats(session, now=NOON + timedelta(hours=2))
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
    [task] = cats_leased(session_factory, pets, people.ann, JUNK)
    decide_all(session_factory, people.ann, [task], [Verdict.JUNK])
    with transaction(session_factory) as session:
        [record] = verdict_service.sample_history(session, task.sample_id or 0)
        decision_service.undo(
            session, user=people.ann, decision_id=record.decision_id, idempotency_key="u"
        )
    with transaction(session_factory) as session:
        stats = stats_service.queue_stats(session)
        progress = stats_service.progress(session, user=people.ann)
    assert [a.decisions for a in stats.annotators] == [1]
    assert progress.decisions == 1


def test_agreement_compares_the_standing_verdicts_of_both_opinions(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    dog = pets.classes["dog"]
    first = cats_leased(session_factory, pets, people.ann, LABEL, n=4)
    decide_all(
        session_factory,
        people.ann,
        first,
        [Verdict.ACCEPT, Verdict.JUNK, Verdict.RELABEL, Verdict.RELABEL],
        class_ids=[None, None, dog, dog],
    )
    with transaction(session_factory) as session:
        dataset = session.get_one(Dataset, pets.dataset_id)
        asked = task_service.request_second_opinions(
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
        [agreement] = stats_service.agreement(session)
    assert (agreement.kind, agreement.pairs, agreement.agreed) == (LABEL, 4, 2)
    assert agreement.rate == 0.5


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
        progress = stats_service.progress(session, user=people.ann, now=NOON + timedelta(hours=1))
    assert progress.decisions == 3
    assert progress.by_kind == {JUNK: 2, LABEL: 1}
    assert progress.median_seconds == 4.0
