"""Undoing a decision: a superseding decision that reopens the task for the same annotator,
recorded once per key, only for one's own standing decisions (SQLite and PostgreSQL)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from app.errors import Forbidden, Invalid, NotFound
from app.models import TaskState, Verdict
from app.review.service import decisions as decision_service
from tests.app.review.conftest import People
from tests.app.review.factories import Pets, lease
from tests.app.review.service.helpers import (
    JUNK,
    LABEL,
    cats_leased,
    decide,
    decision_count,
    refused,
    task_state,
    undo,
    verdict,
)


def test_undo_appends_a_superseding_decision_and_reopens_the_task_for_the_same_annotator(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    [task] = cats_leased(session_factory, pets, people.ann, LABEL)
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
    [task] = cats_leased(session_factory, pets, people.ann, JUNK)
    [record] = decide(session_factory, people.ann, verdict(task, Verdict.JUNK))
    first = undo(session_factory, people.ann, record.id)
    second = undo(session_factory, people.ann, record.id)
    assert second.decision == first.decision
    assert decision_count(session_factory) == 2


def test_undo_refuses_other_users_decisions_undos_and_undone_decisions(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    [task] = cats_leased(session_factory, pets, people.ann, JUNK)
    [record] = decide(session_factory, people.ann, verdict(task, Verdict.JUNK))
    refused(Forbidden, undo, session_factory, people.bob, record.id)
    result = undo(session_factory, people.ann, record.id)
    refused(decision_service.AlreadyUndone, undo, session_factory, people.ann, record.id, "undo-2")
    refused(Invalid, undo, session_factory, people.ann, result.decision.id, "undo-3")
    refused(NotFound, undo, session_factory, people.ann, 999_999, "undo-4")
    assert decision_count(session_factory) == 2
