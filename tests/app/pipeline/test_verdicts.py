"""Applying human decisions: read once they settle past the watermark grace, applied again
without change, and all applied before a review round ends."""

from __future__ import annotations

import pytest

from app.db import transaction
from app.models import (
    EventKind,
    RoundKind,
    RoundState,
    SampleStatus,
    utcnow,
)
from app.pipeline import reconcile
from app.pipeline.verdicts import WATERMARK_GRACE
from app.review.repository import verdicts as verdict_repository
from tests.app.pipeline.factories import (
    FakeAnnotator,
    Toy,
    count_events,
)
from tests.app.pipeline.loop import Loop


def test_decisions_are_read_once_they_settle_and_applying_them_again_changes_nothing(
    loop: Loop, toy: Toy, annotator: FakeAnnotator
) -> None:
    loop.create(seed_random_samples=0)
    loop.start(RoundKind.JUNK_SEED)
    annotator.review_all()
    pipeline_id = loop.pipeline().id
    with transaction(loop.factory) as session:
        fresh = reconcile.reconcile_pipeline(session, env=loop.env, pipeline_id=pipeline_id)
    assert fresh is not None and fresh.decisions == len(toy.non_rgb)
    assert loop.pipeline().decisions_seen_id == 0  # too young to be passed by
    later = utcnow() + WATERMARK_GRACE * 2
    with transaction(loop.factory) as session:
        again = reconcile.reconcile_pipeline(
            session, env=loop.env, pipeline_id=pipeline_id, now=later
        )
    assert again is not None and again.decisions == len(toy.non_rgb)
    assert again.samples_changed == 0
    assert loop.pipeline().decisions_seen_id == max(annotator.decided)
    with transaction(loop.factory) as session:
        last = reconcile.reconcile_pipeline(
            session, env=loop.env, pipeline_id=pipeline_id, now=later
        )
        verdicts = count_events(session, toy.dataset_id, kind=EventKind.VERDICT)
    assert last is not None and last.decisions == 0
    assert verdicts == len(toy.non_rgb)


def test_a_review_round_ends_only_with_all_its_decisions_applied(
    loop: Loop, toy: Toy, annotator: FakeAnnotator, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop.create(seed_random_samples=0)
    loop.start(RoundKind.JUNK_SEED)
    annotator.review_all()
    original = verdict_repository.decisions_after
    calls: list[int] = []

    def late(*args: object, **kwargs: object) -> list[verdict_repository.DecisionStub]:
        # The first read misses the decisions, as if they committed just after it.
        calls.append(1)
        return [] if len(calls) == 1 else original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(verdict_repository, "decisions_after", late)
    loop.reconcile()
    [seed] = loop.rounds()
    assert seed.state is RoundState.DONE
    statuses = loop.statuses()
    assert {
        sid for sid, st in statuses.items() if st is SampleStatus.JUNK
    } == toy.non_rgb & toy.junk
