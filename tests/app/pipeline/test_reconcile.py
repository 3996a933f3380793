"""Auto mode: the reconciler runs the whole loop to a trained model, and stops with the reason
when a step refuses."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.db import transaction
from app.models import (
    JobState,
    ReviewTask,
    RoundKind,
    RoundState,
    SampleStatus,
    Stage,
    TaskState,
)
from app.pipeline import stages
from app.pipeline.stages.context import RoundContext, StepRefused
from tests.app.pipeline.factories import FakeAnnotator, Toy
from tests.app.pipeline.fake_worker import FakeWorker
from tests.app.pipeline.loop import Loop


def test_auto_mode_runs_the_whole_loop_to_a_trained_model(
    loop: Loop, toy: Toy, worker: FakeWorker, annotator: FakeAnnotator
) -> None:
    loop.create(
        auto=True,
        seed_random_samples=10,
        junk_min_labels=1,
        audit_size=20,
        junk_target_rate=0.5,
        folds=3,
        human_fraction=0.5,
        min_class_size=5,
        final_teacher="none",
    )
    loop.reconcile()
    loop.run(worker, annotator)
    kinds = [r.kind for r in loop.rounds()]
    assert kinds[:3] == [RoundKind.JUNK_SEED, RoundKind.JUNK_ITERATION, RoundKind.JUNK_AUDIT]
    assert RoundKind.CROSS_VALIDATION in kinds and RoundKind.HUMAN_SAMPLE in kinds
    assert kinds[-2:] == [RoundKind.CLASS_REVIEW, RoundKind.FINAL_TRAINING]
    assert all(r.state is RoundState.DONE for r in loop.rounds())
    statuses = loop.statuses()
    assert {statuses[sid] for sid in toy.junk} == {SampleStatus.JUNK}
    final = {sid for sid, st in statuses.items() if st.trainable}
    assert final.isdisjoint(toy.junk) and final.isdisjoint(
        toy.noisy - {sid for sid, st in statuses.items() if st is SampleStatus.RELABELLED}
    )
    with transaction(loop.factory) as session:
        tasks = list(
            session.scalars(select(ReviewTask).where(ReviewTask.dataset_id == toy.dataset_id))
        )
    jobs = loop.jobs()
    assert {t.state for t in tasks} <= {TaskState.DONE, TaskState.CANCELLED}
    assert {j.state for j in jobs} == {JobState.SUCCEEDED}


def test_auto_mode_stops_with_the_reason_when_a_step_refuses(
    loop: Loop, toy: Toy, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(ctx: RoundContext) -> None:
        raise StepRefused("not today")

    monkeypatch.setitem(stages.RULES, RoundKind.CROSS_VALIDATION, stages.RoundRules(refuse))
    loop.create(auto=True)
    loop.update(stage=Stage.LABEL)
    loop.reconcile()
    pipeline = loop.pipeline()
    assert pipeline.auto is False
    assert pipeline.note == "auto mode stopped: cross_validation refused: not today"
    assert loop.rounds() == []
