"""The junk stage's rounds with stubbed model outputs (the fake worker) and answers from the
truth (the fake annotator): the seed, iterations, audits, flag audits and bulk acceptance."""

from __future__ import annotations

import pytest

from app.db import transaction
from app.models import (
    EventKind,
    RoundKind,
    RoundState,
    SampleStatus,
    TaskKind,
    TaskState,
    Verdict,
)
from app.pipeline.estimates import clopper_pearson
from app.pipeline.stages.context import StepRefused
from app.review.service import decisions as decision_service
from app.review.service import verdicts as verdict_service
from ml.core.protocol.jobs import parse_spec
from tests.app.pipeline.factories import FakeAnnotator, Toy, count_events, count_tasks
from tests.app.pipeline.fake_worker import FakeWorker
from tests.app.pipeline.loop import Loop


def test_the_junk_seed_queues_the_non_rgb_images_and_a_random_sample(loop: Loop, toy: Toy) -> None:
    loop.create(seed_random_samples=10)
    round_ = loop.start(RoundKind.JUNK_SEED)
    assert round_.state is RoundState.REVIEWING and round_.source == "junk seed 1"
    tasks = loop.tasks("junk seed 1")
    assert {t.kind for t in tasks} == {TaskKind.JUNK_CHECK}
    first = {t.sample_id for t in tasks if t.priority == 1.0}
    assert first == toy.non_rgb
    assert len(tasks) == len(toy.non_rgb) + 10
    assert round_.stats == {"non_rgb": len(toy.non_rgb), "random": 10, "queued": len(tasks)}


def test_junk_verdicts_make_samples_junk_and_the_seed_reports_its_precision(
    loop: Loop, toy: Toy, annotator: FakeAnnotator
) -> None:
    loop.create(seed_random_samples=10)
    loop.start(RoundKind.JUNK_SEED)
    annotator.review_all()
    loop.reconcile()
    [seed] = loop.rounds()
    assert seed.state is RoundState.DONE
    tasks = loop.tasks("junk seed 1")
    junk = {t.sample_id for t in tasks} & toy.junk
    statuses = loop.statuses()
    assert {sid for sid, status in statuses.items() if status is SampleStatus.JUNK} == junk
    assert seed.stats["junk"] == len(junk)
    assert seed.stats["precision"]["successes"] == len(junk)
    assert seed.stats["precision"]["trials"] == len(tasks)
    with transaction(loop.factory) as session:
        verdicts = count_events(session, toy.dataset_id, kind=EventKind.VERDICT)
    assert verdicts == len(tasks)


def test_an_undone_junk_verdict_puts_the_sample_back(
    loop: Loop, toy: Toy, annotator: FakeAnnotator
) -> None:
    loop.create(seed_random_samples=0)
    loop.start(RoundKind.JUNK_SEED)
    annotator.review_all()
    loop.reconcile()
    junk = next(sid for sid, s in loop.statuses().items() if s is SampleStatus.JUNK)
    with transaction(loop.factory) as session:
        [decision] = [
            d for d in verdict_service.sample_history(session, junk) if d.verdict is Verdict.JUNK
        ]
        decision_service.undo(
            session,
            user=annotator.user,
            decision_id=decision.decision_id,
            idempotency_key="undo-1",
        )
    loop.reconcile()
    state = loop.states()[junk]
    assert state.status is SampleStatus.CANDIDATE and state.decision_id is None
    with transaction(loop.factory) as session:
        assert count_events(session, toy.dataset_id, kind=EventKind.WITHDRAWN, sample_id=junk) == 1
    # Decided afresh, the verdict is applied again.
    annotator.review_all()
    loop.reconcile()
    assert loop.statuses()[junk] is SampleStatus.JUNK


def test_a_junk_iteration_needs_human_labels_of_both_kinds(loop: Loop, toy: Toy) -> None:
    loop.create(junk_min_labels=3)
    with pytest.raises(StepRefused, match="at least 3 human junk"):
        loop.start(RoundKind.JUNK_ITERATION)
    assert loop.rounds() == []
    assert loop.jobs() == []


def test_a_junk_iteration_queues_its_flags_highest_first_but_no_decided_sample(
    loop: Loop, toy: Toy, worker: FakeWorker, annotator: FakeAnnotator
) -> None:
    loop.create(seed_random_samples=10, junk_min_labels=1)
    loop.start(RoundKind.JUNK_SEED)
    annotator.review_all()
    loop.reconcile()
    decided = {sid for sid, row in loop.states().items() if row.decision_id is not None}
    scores = {sid: 0.91 + (sid % 7) / 100 for sid in toy.junk}
    worker.junk_score = lambda sid: scores.get(sid, 0.05)
    iteration = loop.start(RoundKind.JUNK_ITERATION)
    assert iteration.state is RoundState.RUNNING
    [job] = loop.jobs()
    spec = parse_spec(job.spec)
    assert spec.kind.value == "train_junk"
    worker.run_all()
    loop.reconcile()
    iteration = loop.round(iteration.id)
    assert iteration.state is RoundState.REVIEWING
    tasks = loop.tasks("junk iteration 1")
    assert {t.sample_id for t in tasks} == toy.junk - decided
    assert [t.sample_id for t in sorted(tasks, key=lambda t: -t.priority)] == sorted(
        toy.junk - decided, key=lambda sid: (-scores[sid], sid)
    )
    assert all(t.score == pytest.approx(scores[t.sample_id]) for t in tasks)
    states = loop.states()
    scored = {sid for sid, row in states.items() if row.status in (SampleStatus.CANDIDATE,)}
    assert scored and all(states[sid].junk_score is not None for sid in scored)
    assert iteration.stats["flagged"] == len(toy.junk - decided)  # the junk ones are not scored
    assert iteration.stats["queued"] == len(tasks)
    assert sum(iteration.stats["histogram"]) == iteration.stats["scored"]


def test_a_junk_audit_reports_the_junk_left_with_its_bounds(
    loop: Loop, toy: Toy, annotator: FakeAnnotator
) -> None:
    loop.create(audit_size=1000, junk_target_rate=0.2)
    audit = loop.start(RoundKind.JUNK_AUDIT)
    assert audit.stats["pool"] == len(toy.given) and audit.stats["queued"] == len(toy.given)
    annotator.review_all()
    loop.reconcile()
    audit = loop.round(audit.id)
    found, n = len(toy.junk), len(toy.given)
    estimate = audit.stats["estimate"]
    assert (estimate["successes"], estimate["trials"]) == (found, n)
    assert estimate["rate"] == pytest.approx(found / n)
    low, high = clopper_pearson(found, n)
    assert (estimate["low"], estimate["high"]) == pytest.approx((low, high))
    # 6 of 60 junk: the one-sided 95% bounds of Beta(0.05; 6, 55) and Beta(0.95; 7, 54).
    assert (low, high) == pytest.approx((0.044453, 0.187857), abs=1e-6)
    assert estimate["count"] == pytest.approx(found)
    assert audit.stats["overall"]["high"] == pytest.approx(high)
    assert audit.stats["meets_target"] is True


def test_a_junk_audit_draws_only_unverified_samples(
    loop: Loop, toy: Toy, annotator: FakeAnnotator
) -> None:
    loop.create(seed_random_samples=10, audit_size=1000)
    loop.start(RoundKind.JUNK_SEED)
    annotator.review_all()
    loop.reconcile()
    verified = {sid for sid, row in loop.states().items() if row.decision_id is not None}
    audit = loop.start(RoundKind.JUNK_AUDIT)
    audited = {t.sample_id for t in loop.tasks(audit.source)}
    assert audited.isdisjoint(verified)
    clean_verified = len(verified - toy.junk)
    assert audit.stats["verified_clean"] == clean_verified
    assert audit.stats["pool"] == len(audited)


def test_bulk_acceptance_waits_for_an_audit_of_the_flags(
    loop: Loop, toy: Toy, worker: FakeWorker, annotator: FakeAnnotator
) -> None:
    loop.create(
        seed_random_samples=0,
        junk_min_labels=1,
        bulk_threshold=0.95,
        bulk_min_precision=0.2,
        flag_audit_size=2,
    )
    loop.start(RoundKind.JUNK_SEED)
    annotator.review_all()
    loop.reconcile()
    iteration = loop.start(RoundKind.JUNK_ITERATION)
    worker.run_all()
    loop.reconcile()
    flagged = {t.sample_id for t in loop.tasks("junk iteration 1")}
    assert len(flagged) >= 3
    loop.finish(iteration.id)  # the engineer stops reviewing the flags one by one
    with pytest.raises(StepRefused, match="flag audit"):
        loop.start(RoundKind.BULK_ACCEPT)
    audit = loop.start(RoundKind.FLAG_AUDIT, threshold=0.95)
    audited = {t.sample_id for t in loop.tasks(audit.source)}
    assert len(audited) == 2 and audited <= flagged
    annotator.review_all(kinds=(TaskKind.JUNK_AUDIT,))
    loop.reconcile()
    audit = loop.round(audit.id)
    assert audit.stats["precision"]["successes"] == 2
    assert audit.stats["precision"]["low"] == pytest.approx(0.05**0.5)  # 2 of 2: sqrt(0.05)
    assert audit.stats["bulk_allowed"] is True
    bulk = loop.start(RoundKind.BULK_ACCEPT)
    assert bulk.state is RoundState.DONE
    rest = flagged - audited
    assert bulk.stats["accepted"] == len(rest)
    states = loop.states()
    assert {states[sid].status for sid in rest} == {SampleStatus.JUNK}
    assert {states[sid].model_status for sid in rest} == {SampleStatus.JUNK}
    with transaction(loop.factory) as session:
        assert count_events(session, toy.dataset_id, kind=EventKind.BULK_JUNK) == len(rest)
        assert (
            count_tasks(session, toy.dataset_id, source="junk iteration 1", state=TaskState.PENDING)
            == 0
        )
