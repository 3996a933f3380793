"""The label stage's rounds with stubbed model outputs: cross-validation under the top-k rule
with confident learning beside it, pull-back rounds and the human sample of the rejected set."""

from __future__ import annotations

import pytest

from app.db import transaction
from app.models import (
    RoundKind,
    RoundState,
    SampleStatus,
    TaskKind,
    Verdict,
)
from app.pipeline.estimates import clopper_pearson
from ml.core.protocol.jobs import parse_spec
from tests.app.pipeline.factories import FakeAnnotator, Toy, count_events
from tests.app.pipeline.fake_worker import FakeWorker, missing_some
from tests.app.pipeline.loop import Loop


def test_cross_validation_applies_the_top_k_rule_and_records_cleanlab_beside_it(
    loop: Loop, toy: Toy, worker: FakeWorker
) -> None:
    loop.create(folds=3)
    loop.cross_validate(worker)
    [cv] = loop.rounds()
    assert cv.state is RoundState.DONE and cv.params["k"] == 1
    jobs = loop.jobs()
    assert [j.kind.value for j in jobs] == ["train_fold"] * 3 + ["confident_learning"]
    states = loop.states()
    rejected = {sid for sid, row in states.items() if row.status is SampleStatus.REJECTED}
    assert rejected == toy.noisy
    kept = {sid for sid, row in states.items() if row.status is SampleStatus.KEPT}
    assert kept == set(toy.given) - toy.noisy
    assert {states[sid].cl_issue for sid in toy.noisy} == {True}
    assert all(states[sid].label_rank == 0 for sid in kept)
    assert cv.stats["kept"] == len(kept) and cv.stats["rejected"] == len(rejected)
    assert cv.stats["confident_learning"]["both"] == len(rejected)
    assert cv.stats["confident_learning"]["agreement"] == 1.0
    with transaction(loop.factory) as session:
        assert count_events(session, toy.dataset_id, round_id=cv.id) == len(toy.given)


def test_a_pull_back_round_moves_back_what_its_model_confirms(
    loop: Loop, toy: Toy, worker: FakeWorker
) -> None:
    loop.create(folds=3)
    unlucky = {sid for sid in toy.given if sid % 4 == 0} - toy.noisy
    worker.ranking = missing_some(toy, unlucky)
    loop.cross_validate(worker)
    assert {s for s, st in loop.statuses().items() if st is SampleStatus.REJECTED} == (
        toy.noisy | unlucky
    )
    worker.ranking = None  # the pull-back model gets them right
    pull = loop.start(RoundKind.PULL_BACK)
    [job] = [j for j in loop.jobs() if j.kind.value == "train_predict"]
    assert parse_spec(job.spec).predict.count == len(toy.noisy | unlucky)  # type: ignore[union-attr]
    worker.run_all()
    loop.reconcile()
    pull = loop.round(pull.id)
    statuses = loop.statuses()
    assert {s for s, st in statuses.items() if st is SampleStatus.PULLED_BACK} == unlucky
    assert {s for s, st in statuses.items() if st is SampleStatus.REJECTED} == toy.noisy
    assert pull.stats["pulled_back"] == len(unlucky)
    # A second round finds nothing new.
    again = loop.start(RoundKind.PULL_BACK)
    worker.run_all()
    loop.reconcile()
    assert loop.round(again.id).stats["pulled_back"] == 0


def test_the_human_sample_applies_every_kind_of_decision(
    loop: Loop, toy: Toy, worker: FakeWorker, annotator: FakeAnnotator
) -> None:
    loop.create(folds=3, human_fraction=1.0)
    loop.cross_validate(worker)
    sample = loop.start(RoundKind.HUMAN_SAMPLE)
    tasks = loop.tasks(sample.source)
    assert {t.sample_id for t in tasks} == toy.noisy
    assert all(t.kind is TaskKind.LABEL_CHECK for t in tasks)
    for task in tasks:
        assert task.suggestions is not None
        assert task.suggestions[0][0] == toy.true[task.sample_id]  # the model's best first
    order = sorted(toy.noisy)
    script = {
        order[0]: (Verdict.ACCEPT, None),
        order[1]: (Verdict.JUNK, None),
        order[2]: (Verdict.UNSURE, None),
    }

    def answer(
        kind: TaskKind, sample_id: int | None, class_id: int | None
    ) -> tuple[Verdict, int | None]:
        assert sample_id is not None
        return script.get(sample_id) or (Verdict.RELABEL, toy.true[sample_id])

    annotator.answer = answer
    annotator.review_all()
    loop.reconcile()
    states = loop.states()
    assert states[order[0]].status is SampleStatus.CONFIRMED
    assert states[order[0]].label_class_id == toy.given[order[0]]
    assert states[order[1]].status is SampleStatus.JUNK
    assert states[order[2]].status is SampleStatus.REJECTED
    assert states[order[2]].human_verdict is Verdict.UNSURE
    for sid in order[3:]:
        assert states[sid].status is SampleStatus.RELABELLED
        assert states[sid].label_class_id == toy.true[sid]
    sample = loop.round(sample.id)
    stats = sample.stats
    assert (stats["accepted"], stats["relabelled"], stats["junk"], stats["unsure"]) == (
        1,
        len(order) - 3,
        1,
        1,
    )
    # Among the judged (unsure left out): wrongly rejected = accepted; usable = + relabelled.
    judged = len(order) - 1
    assert (stats["estimate"]["successes"], stats["estimate"]["trials"]) == (1, judged)
    assert (stats["usable"]["successes"], stats["usable"]["trials"]) == (judged - 1, judged)
    assert stats["estimate"]["high"] == pytest.approx(clopper_pearson(1, judged)[1])
    assert stats["usable"]["low"] == pytest.approx(clopper_pearson(judged - 1, judged)[0])
    assert stats["estimate"]["population"] == 0  # everything rejected was sampled
