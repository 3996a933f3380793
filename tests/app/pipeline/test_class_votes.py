"""A class drop takes two people: one drop asks someone else, the same person twice counts
once, a keep keeps the class; and an engineer restores a dropped class from the dashboard."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db import transaction
from app.models import (
    TRAINABLE,
    ClassState,
    EventKind,
    PipelineEvent,
    PipelineRound,
    ReviewDecision,
    ReviewTask,
    Role,
    RoundKind,
    RoundState,
    SampleStatus,
    Stage,
    TaskKind,
    TaskState,
    Verdict,
)
from app.pipeline import service
from app.pipeline.config import PipelineEnv
from app.review.records import DecisionInput, TaskItem
from app.review.service import decisions as decision_service
from app.review.service import tasks as task_service
from tests.app.pipeline.factories import FakeAnnotator, Toy
from tests.app.pipeline.loop import Loop
from tests.app.review.factories import make_user
from tests.conftest import MakeAccount, browser_login

Answer = Callable[[TaskKind, int | None, int | None], tuple[Verdict, int | None]]


@pytest.fixture
def loop(app: FastAPI, client: TestClient, env: PipelineEnv, toy: Toy) -> Loop:
    """The toy pipeline in the app's database (``client`` runs the app's lifespan, which
    closes its connections at the end)."""
    return Loop(app.state.session_factory, env, toy)


def person(loop: Loop, name: str, answer: Answer) -> FakeAnnotator:
    with transaction(loop.factory) as session:
        user = make_user(session, name)
    return FakeAnnotator(loop.factory, loop.toy, user, answer)


def drop(class_id: int) -> Answer:
    """Drops ``class_id``, keeps every other class."""
    return lambda kind, s, c: (Verdict.DROP if c == class_id else Verdict.KEEP, None)


def keep_all(kind: TaskKind, s: int | None, c: int | None) -> tuple[Verdict, int | None]:
    return Verdict.KEEP, None


def class_review(loop: Loop, **config: object) -> PipelineRound:
    loop.create(min_class_size=1000, **config)
    loop.update(stage=Stage.CLASS)
    return loop.start(RoundKind.CLASS_REVIEW)


def samples_of(loop: Loop, class_id: int) -> set[SampleStatus]:
    return {
        row.status
        for row in loop.states().values()
        if row.label_class_id == class_id and row.status is not SampleStatus.DUPLICATE
    }


def open_tasks(loop: Loop, class_id: int) -> list[ReviewTask]:
    with transaction(loop.factory) as session:
        return list(
            session.scalars(
                select(ReviewTask).where(
                    ReviewTask.class_id == class_id,
                    ReviewTask.state.in_([TaskState.PENDING, TaskState.LEASED]),
                )
            )
        )


def test_one_drop_does_not_drop_a_class_and_asks_someone_else(loop: Loop, toy: Toy) -> None:
    cat = toy.classes["cat"]
    round_ = class_review(loop)
    ann = person(loop, "ann", drop(cat))
    assert ann.review_all() == len(toy.classes)
    loop.reconcile()
    assert loop.classes()[cat].state is ClassState.REVIEW
    assert samples_of(loop, cat) <= TRAINABLE
    [asked] = open_tasks(loop, cat)
    assert (asked.exclude_user_id, asked.source) == (ann.user.id, round_.source)
    assert asked.origin_task_id is not None
    assert loop.round(round_.id).state is RoundState.REVIEWING  # the loop waits for the vote
    assert ann.review_all() == 0  # nobody is asked about a class twice

    bob = person(loop, "bob", drop(cat))
    assert bob.review_all() == 1
    loop.reconcile()
    assert loop.classes()[cat].state is ClassState.DROPPED
    assert samples_of(loop, cat) == {SampleStatus.DROPPED}
    done = loop.round(round_.id)
    assert done.state is RoundState.DONE
    assert done.stats["dropped"] == [cat] and done.stats["awaiting_votes"] == 0


def test_a_keep_from_the_second_annotator_keeps_the_class(loop: Loop, toy: Toy) -> None:
    cat = toy.classes["cat"]
    round_ = class_review(loop)
    person(loop, "ann", drop(cat)).review_all()
    loop.reconcile()
    assert person(loop, "bob", keep_all).review_all() == 1
    loop.reconcile()
    assert loop.classes()[cat].state is ClassState.KEPT
    assert samples_of(loop, cat) <= TRAINABLE
    assert open_tasks(loop, cat) == []
    assert loop.round(round_.id).state is RoundState.DONE
    assert loop.round(round_.id).stats["dropped"] == []


def test_the_same_annotator_twice_counts_once(loop: Loop, toy: Toy) -> None:
    cat = toy.classes["cat"]
    class_review(loop)
    ann = person(loop, "ann", drop(cat))
    ann.review_all()
    loop.reconcile()
    with transaction(loop.factory) as session:  # the same question, queued by hand
        task_service.create_tasks(
            session,
            dataset=loop.dataset(session),
            kind=TaskKind.CLASS_CHECK,
            items=[TaskItem(class_id=cat)],
            source="manual",
        )
    assert ann.review_all() == 0  # ann voted on cat: neither task is offered to her
    with transaction(loop.factory) as session:  # ann withdraws her drop and drops again
        first = session.scalars(
            select(ReviewDecision).where(
                ReviewDecision.class_id == cat, ReviewDecision.user_id == ann.user.id
            )
        ).one()
        undone = decision_service.undo(
            session, user=ann.user, decision_id=first.id, idempotency_key="u"
        )
        decision_service.decide(
            session,
            user=ann.user,
            decisions=[
                DecisionInput(
                    task_id=undone.task.id,
                    lease_version=undone.task.lease_version,
                    verdict=Verdict.DROP,
                    idempotency_key="again",
                )
            ],
        )
    loop.reconcile()
    assert loop.classes()[cat].state is ClassState.REVIEW
    assert samples_of(loop, cat) <= TRAINABLE


def test_the_number_of_drops_is_configurable(loop: Loop, toy: Toy) -> None:
    cat = toy.classes["cat"]
    class_review(loop, class_drop_votes=1)
    person(loop, "ann", drop(cat)).review_all()
    loop.reconcile()
    assert loop.classes()[cat].state is ClassState.DROPPED


def dropped_cat(loop: Loop, toy: Toy) -> int:
    cat = toy.classes["cat"]
    class_review(loop)
    for name in ("ann", "bob"):
        person(loop, name, drop(cat)).review_all()
        loop.reconcile()
    assert loop.classes()[cat].state is ClassState.DROPPED
    return cat


def test_an_engineer_restores_a_dropped_class_from_the_dashboard(
    loop: Loop, toy: Toy, client: TestClient, make_account: MakeAccount, env: PipelineEnv
) -> None:
    cat = dropped_cat(loop, toy)
    eve = make_account(Role.ENGINEER, username="eve", token=False)
    csrf = browser_login(client, "eve")
    page = client.get(f"/datasets/{toy.dataset_id}/cleaning").text
    row = re.search(rf'<tr data-class-id="{cat}">.*?</tr>', page, flags=re.DOTALL)
    assert row is not None, page
    assert "<td>cat</td>" in row.group(0) and "<td>ann, bob</td>" in row.group(0)
    url = f"/datasets/{toy.dataset_id}/cleaning/classes/{cat}/restore"
    assert f'action="{url}"' in row.group(0)

    assert client.post(url, follow_redirects=False).status_code == 403  # no CSRF token
    assert loop.classes()[cat].state is ClassState.DROPPED
    restored = client.post(url, data={"csrf_token": csrf}, follow_redirects=False)
    assert restored.status_code == 303
    assert restored.headers["location"] == f"/datasets/{toy.dataset_id}/cleaning#cleaning-dropped"
    state = loop.classes()[cat]
    assert (state.state, state.restored_by_id) == (ClassState.KEPT, eve.user.id)
    assert samples_of(loop, cat) <= TRAINABLE
    with transaction(loop.factory) as session:
        event = session.scalars(
            select(PipelineEvent).where(
                PipelineEvent.class_id == cat,
                PipelineEvent.sample_id.is_(None),
                PipelineEvent.kind == EventKind.CLASS_KEPT,
            )
        ).one()
    assert "restored by eve" in event.detail
    assert 'id="cleaning-dropped"' not in client.get(f"/datasets/{toy.dataset_id}/cleaning").text

    again = client.post(url, data={"csrf_token": csrf}, follow_redirects=False)
    assert again.status_code == 303  # a retry changes nothing
    ant = toy.classes["ant"]
    never = f"/datasets/{toy.dataset_id}/cleaning/classes/{ant}/restore"
    assert client.post(never, data={"csrf_token": csrf}).status_code == 409
    # Re-reading every decision ever made does not drop it again: the old votes are set aside.
    with transaction(loop.factory) as session:
        service.reconcile_now(session, dataset=loop.dataset(session), env=env, full=True)
    assert loop.classes()[cat].state is ClassState.KEPT
    assert samples_of(loop, cat) <= TRAINABLE


def test_the_api_restores_a_class_for_engineers_only(
    loop: Loop, toy: Toy, client: TestClient, make_account: MakeAccount
) -> None:
    cat = dropped_cat(loop, toy)
    url = f"/api/pipelines/{toy.dataset_id}/classes/{cat}/restore"
    annotator = make_account(Role.ANNOTATOR, username="ann2", token=False)
    with TestClient(client.app) as other:
        token = browser_login(other, annotator.user.username)
        assert other.post(url, headers={"X-CSRF-Token": token}).status_code == 403
    response = client.post(url, headers=make_account(Role.ENGINEER).headers)
    assert response.status_code == 200, response.text
    classes = {item["class_id"]: item for item in response.json()}
    assert classes[cat]["state"] == "kept" and classes[cat]["after"] > 0
    missing = client.post(
        f"/api/pipelines/{toy.dataset_id}/classes/999999/restore",
        headers=make_account(Role.ENGINEER).headers,
    )
    assert missing.status_code == 404
