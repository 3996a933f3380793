"""The class review (dropping a class and undoing it) and the final training's evaluation set
and teachers."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.db import transaction
from app.models import (
    ClassState,
    ReviewDecision,
    RoundKind,
    RoundState,
    SampleStatus,
    Stage,
    TaskKind,
    Verdict,
)
from app.review.service import decisions as decision_service
from ml.core.protocol.jobs import TrainFinalSpec, parse_spec
from tests.app.pipeline.factories import FakeAnnotator, Toy
from tests.app.pipeline.fake_worker import FakeWorker
from tests.app.pipeline.loop import Loop
from tests.app.review.factories import make_user


def test_dropping_a_class_takes_its_samples_out_and_an_undo_brings_them_back(
    loop: Loop, toy: Toy, annotator: FakeAnnotator
) -> None:
    loop.create(min_class_size=1000)
    loop.update(stage=Stage.CLASS)
    review_round = loop.start(RoundKind.CLASS_REVIEW)
    tasks = loop.tasks(review_round.source)
    assert {t.class_id for t in tasks} == set(toy.classes.values())
    cat = toy.classes["cat"]
    annotator.answer = lambda kind, s, c: (Verdict.DROP if c == cat else Verdict.KEEP, None)
    annotator.review_all()
    loop.reconcile()  # one drop: a second annotator is asked
    with transaction(loop.factory) as session:
        second = FakeAnnotator(loop.factory, toy, make_user(session, "bob"), annotator.answer)
    assert second.review_all() == 1
    loop.reconcile()
    classes = loop.classes()
    assert classes[cat].state is ClassState.DROPPED
    assert {classes[c].state for c in toy.classes.values() if c != cat} == {ClassState.KEPT}
    states = loop.states()
    cats = {
        sid
        for sid, row in states.items()
        if row.label_class_id == cat and row.status is not SampleStatus.DUPLICATE
    }
    assert {states[sid].status for sid in cats} == {SampleStatus.DROPPED}
    assert loop.round(review_round.id).stats["dropped"] == [cat]
    with transaction(loop.factory) as session:
        decision_id = session.scalar(
            select(ReviewDecision.id).where(
                ReviewDecision.class_id == cat,
                ReviewDecision.kind == TaskKind.CLASS_CHECK,
                ReviewDecision.user_id == second.user.id,
            )
        )
        assert decision_id is not None
        decision_service.undo(
            session, user=second.user, decision_id=decision_id, idempotency_key="u"
        )
    loop.reconcile()
    assert loop.classes()[cat].state is ClassState.REVIEW
    assert {loop.statuses()[sid] for sid in cats} == {SampleStatus.CANDIDATE}


def test_final_training_holds_out_a_split_without_enough_verified_samples(
    loop: Loop, toy: Toy, worker: FakeWorker
) -> None:
    loop.create(final_teacher="none", val_fraction=0.25)
    loop.update(stage=Stage.FINAL)
    final = loop.start(RoundKind.FINAL_TRAINING)
    assert final.stats["eval_source"] == "held_out"
    [job] = loop.jobs()
    spec = parse_spec(job.spec)
    assert isinstance(spec, TrainFinalSpec) and spec.eval is not None
    assert spec.train.count + spec.eval.count == len(toy.given)
    assert spec.eval.count == 3 * 5  # a quarter of each class
    worker.run_all()
    loop.reconcile()
    final = loop.round(final.id)
    assert final.state is RoundState.DONE and final.stats["metrics"]["top1"] == 0.8
    assert loop.pipeline().stage is Stage.DONE


def test_final_training_evaluates_on_human_verified_samples_when_there_are_enough(
    loop: Loop, toy: Toy, worker: FakeWorker, annotator: FakeAnnotator
) -> None:
    loop.create(folds=3, human_fraction=1.0, min_eval_samples=5, final_teacher="folds")
    loop.cross_validate(worker)
    loop.start(RoundKind.HUMAN_SAMPLE)
    annotator.review_all()
    loop.reconcile()
    verified = {
        sid
        for sid, st in loop.statuses().items()
        if st in (SampleStatus.CONFIRMED, SampleStatus.RELABELLED)
    }
    final_set = sum(1 for st in loop.statuses().values() if st.trainable)
    final = loop.start(RoundKind.FINAL_TRAINING)
    assert final.stats["eval_source"] == "human_verified"
    # A tenth of the final set (at least min_eval_samples), drawn from the verified samples.
    assert final.stats["eval"] == min(len(verified), max(5, -(-final_set // 10)))
    assert final.stats["train"] == final_set - final.stats["eval"]
    job = next(j for j in loop.jobs() if j.kind.value == "train_final")
    spec = parse_spec(job.spec)
    assert isinstance(spec, TrainFinalSpec)
    assert len(spec.teachers) == 3  # distilled from the fold models


@pytest.mark.parametrize(("hardware", "teachers"), [("cpu", 0), ("gpu", 3)])
def test_by_default_the_final_training_distils_from_the_folds_only_on_gpus(
    loop: Loop, toy: Toy, worker: FakeWorker, hardware: str, teachers: int
) -> None:
    loop.create(folds=3, hardware=hardware)
    loop.cross_validate(worker)
    loop.update(stage=Stage.FINAL)
    final = loop.start(RoundKind.FINAL_TRAINING)
    job = next(j for j in loop.jobs() if j.kind.value == "train_final")
    spec = parse_spec(job.spec)
    assert isinstance(spec, TrainFinalSpec)
    assert len(spec.teachers) == teachers
    note = final.stats["teacher_note"]
    assert note == "no distillation" if teachers == 0 else note.startswith("distilled from")
