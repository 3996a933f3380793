"""Reading decisions: a sample's current verdict and its history (SQLite and PostgreSQL)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.models import Verdict
from app.review.service import verdicts as verdict_service
from tests.app.review.conftest import People
from tests.app.review.factories import Pets
from tests.app.review.service.helpers import JUNK, LABEL, cats_leased, decide, undo, verdict


def test_current_verdict_is_the_latest_decision_no_undo_withdrew(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    sample = pets.samples["cat"][0]
    [task] = cats_leased(session_factory, pets, people.ann, LABEL)
    [first] = decide(session_factory, people.ann, verdict(task, Verdict.JUNK))

    def current() -> Verdict | None:
        with transaction(session_factory) as session:
            found = verdict_service.current_verdicts(session, dataset_id=pets.dataset_id)
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
        found = verdict_service.current_verdicts(session, sample_ids=[sample], kinds=[JUNK])
    assert found == {}


def test_sample_history_keeps_every_decision_in_order(
    session_factory: sessionmaker[Session], pets: Pets, people: People
) -> None:
    sample = pets.samples["cat"][0]
    [task] = cats_leased(session_factory, pets, people.ann, LABEL)
    [first] = decide(session_factory, people.ann, verdict(task, Verdict.JUNK))
    reopened = undo(session_factory, people.ann, first.id).task
    decide(session_factory, people.ann, verdict(reopened, Verdict.UNSURE))
    with transaction(session_factory) as session:
        history = verdict_service.sample_history(session, sample)
    assert [(h.verdict, h.withdrawn) for h in history] == [
        (Verdict.JUNK, True),
        (Verdict.UNDO, False),
        (Verdict.UNSURE, False),
    ]
    assert {h.username for h in history} == {"ann"}
    assert history[0].source == "test round"
