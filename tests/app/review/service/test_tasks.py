"""Queueing review tasks: batches and their checks, audits, second opinions (SQLite and
PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.errors import Invalid
from app.models import Dataset, ReviewTask, TaskKind, TaskState, Verdict
from app.review.records import Suggestion, TaskItem
from app.review.service import tasks as task_service
from tests.app.review.conftest import People
from tests.app.review.factories import Pets, lease, make_pets
from tests.app.review.service.helpers import (
    JUNK,
    LABEL,
    cats_leased,
    create,
    decide_all,
    refused,
    task_state,
)


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
        again = task_service.create_tasks(
            session,
            dataset=dataset,
            kind=JUNK,
            items=[TaskItem(sample_id=s) for s in samples],
            source="test round",
        )
        other_round = task_service.create_tasks(
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
        Invalid,
        task_service.create_tasks,
        session,
        dataset=dataset,
        kind=kind,
        items=[item],
        source="x",
    )
    assert message in error.message


def test_create_tasks_refuses_empty_and_oversized_batches(session: Session, pets: Pets) -> None:
    dataset = session.get_one(Dataset, pets.dataset_id)
    items = [TaskItem(sample_id=s) for s in pets.all_samples]
    assert (
        "empty"
        in refused(
            Invalid,
            task_service.create_tasks,
            session,
            dataset=dataset,
            kind=JUNK,
            items=[],
            source="x",
        ).message
    )
    error = refused(
        Invalid,
        task_service.create_tasks,
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
            task_service.create_tasks,
            session,
            dataset=dataset,
            kind=JUNK,
            items=[TaskItem(sample_id=pets.samples["cat"][0]), TaskItem(sample_id=foreign_sample)],
            source="x",
        )
        assert error.details["sample_ids"] == [foreign_sample]
        error = refused(
            Invalid,
            task_service.create_tasks,
            session,
            dataset=dataset,
            kind=TaskKind.CLASS_CHECK,
            items=[TaskItem(class_id=other.classes["dog"])],
            source="x",
        )
        assert error.details["class_ids"] == [other.classes["dog"]]
        error = refused(
            Invalid,
            task_service.create_tasks,
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


def test_second_opinions_are_asked_once_and_never_of_the_first_decider(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    page = cats_leased(session_factory, pets, people.ann, JUNK, n=6)
    decide_all(session_factory, people.ann, page, [Verdict.NOT_JUNK] * 6)
    with transaction(session_factory) as session:
        dataset = session.get_one(Dataset, pets.dataset_id)
        first = task_service.request_second_opinions(
            session, dataset=dataset, kind=JUNK, fraction=0.5, seed=1
        )
        second = task_service.request_second_opinions(
            session, dataset=dataset, kind=JUNK, fraction=1.0, seed=1
        )
        with pytest.raises(Invalid):
            task_service.request_second_opinions(session, dataset=dataset, kind=JUNK, fraction=0)
    assert (first.created, second.created) == (3, 3)
    assert lease(session_factory, people.ann, JUNK, n=10) == []
    assert len(lease(session_factory, people.bob, JUNK, n=10)) == 6


def test_audit_repeats_with_the_same_seed_and_skips_samples_judged_junk(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    page = cats_leased(session_factory, pets, people.ann, JUNK, n=6)
    decide_all(session_factory, people.ann, page, [Verdict.JUNK] * 6)
    with transaction(session_factory) as session:
        dataset = session.get_one(Dataset, pets.dataset_id)
        created, seed, source = task_service.create_audit(session, dataset=dataset, n=100, seed=5)
        again, _, _ = task_service.create_audit(session, dataset=dataset, n=100, seed=5)
    assert (created.created, seed, source) == (10, 5, "audit seed 5")
    assert (again.created, again.skipped) == (0, 10)
    audited = lease(session_factory, people.bob, TaskKind.JUNK_AUDIT, n=20)
    assert {t.sample_id for t in audited} == set(pets.samples["dog"] + pets.samples["bird"])
