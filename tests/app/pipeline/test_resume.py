"""Resuming after a restart: a server that dies in the middle of advancing any stage leaves
nothing half-done, and a new server (a new app, its own reconciler) finishes the step once —
no task queued twice, no result applied twice, no job queued twice. Two reconcilers racing on
one pipeline do the work once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.main import create_app
from app.models import (
    Job,
    PipelineEvent,
    PipelineRound,
    PipelineRoundJob,
    ReviewTask,
    RoundKind,
    RoundState,
    Stage,
)
from app.pipeline import stages
from app.pipeline.config import PipelineEnv
from app.pipeline.reconcile import Reconciler
from app.settings import Settings
from tests.app.pipeline.factories import FakeAnnotator, Toy
from tests.app.pipeline.fake_worker import FakeWorker
from tests.app.pipeline.loop import Loop


@pytest.fixture
def loop(session_factory: sessionmaker[Session], env: PipelineEnv, toy: Toy) -> Loop:
    loop = Loop(session_factory, env, toy)
    loop.create(
        seed_random_samples=10,
        junk_min_labels=1,
        audit_size=20,
        folds=3,
        human_fraction=1.0,
        min_class_size=1000,
        final_teacher="none",
    )
    return loop


@dataclass(frozen=True)
class Point:
    """How to bring a round to the moment it is advanced, and which handler advances it."""

    kind: RoundKind
    handler: str  # "jobs_done" or "review_done"
    prepare: Callable[[Loop, FakeWorker, FakeAnnotator], int]


def _junk_iteration(loop: Loop, worker: FakeWorker, annotator: FakeAnnotator) -> int:
    loop.start(RoundKind.JUNK_SEED)
    annotator.review_all()
    loop.reconcile()
    round_ = loop.start(RoundKind.JUNK_ITERATION)
    worker.run_all()
    return round_.id


def _junk_audit(loop: Loop, worker: FakeWorker, annotator: FakeAnnotator) -> int:
    round_ = loop.start(RoundKind.JUNK_AUDIT)
    annotator.review_all()
    return round_.id


def _cross_validation(loop: Loop, worker: FakeWorker, annotator: FakeAnnotator) -> int:
    loop.update(stage=Stage.LABEL)
    round_ = loop.start(RoundKind.CROSS_VALIDATION)
    worker.run_all()
    return round_.id


def _cleanlab(loop: Loop, worker: FakeWorker, annotator: FakeAnnotator) -> int:
    round_id = _cross_validation(loop, worker, annotator)
    loop.reconcile()
    worker.run_all()
    return round_id


def _after_cv(loop: Loop, worker: FakeWorker, annotator: FakeAnnotator) -> None:
    _cleanlab(loop, worker, annotator)
    loop.reconcile()


def _pull_back(loop: Loop, worker: FakeWorker, annotator: FakeAnnotator) -> int:
    _after_cv(loop, worker, annotator)
    round_ = loop.start(RoundKind.PULL_BACK)
    worker.run_all()
    return round_.id


def _human_sample(loop: Loop, worker: FakeWorker, annotator: FakeAnnotator) -> int:
    _after_cv(loop, worker, annotator)
    round_ = loop.start(RoundKind.HUMAN_SAMPLE)
    annotator.review_all()
    return round_.id


def _class_review(loop: Loop, worker: FakeWorker, annotator: FakeAnnotator) -> int:
    loop.update(stage=Stage.CLASS)
    round_ = loop.start(RoundKind.CLASS_REVIEW)
    annotator.review_all()
    return round_.id


def _final_training(loop: Loop, worker: FakeWorker, annotator: FakeAnnotator) -> int:
    loop.update(stage=Stage.FINAL)
    round_ = loop.start(RoundKind.FINAL_TRAINING)
    worker.run_all()
    return round_.id


POINTS = {
    "junk iteration": Point(RoundKind.JUNK_ITERATION, "jobs_done", _junk_iteration),
    "junk audit": Point(RoundKind.JUNK_AUDIT, "review_done", _junk_audit),
    "cross-validation folds": Point(RoundKind.CROSS_VALIDATION, "jobs_done", _cross_validation),
    "confident learning": Point(RoundKind.CROSS_VALIDATION, "jobs_done", _cleanlab),
    "pull-back": Point(RoundKind.PULL_BACK, "jobs_done", _pull_back),
    "human sample": Point(RoundKind.HUMAN_SAMPLE, "review_done", _human_sample),
    "class review": Point(RoundKind.CLASS_REVIEW, "review_done", _class_review),
    "final training": Point(RoundKind.FINAL_TRAINING, "jobs_done", _final_training),
}


class PowerCut(RuntimeError):
    pass


def _snapshot(factory: sessionmaker[Session], round_id: int) -> tuple[object, ...]:
    with transaction(factory) as session:
        round_ = session.get_one(PipelineRound, round_id)
        events = session.scalar(select(func.count()).where(PipelineEvent.round_id == round_id))
        all_events = session.scalar(select(func.count()).select_from(PipelineEvent))
        tasks = session.scalar(select(func.count()).select_from(ReviewTask))
        jobs = session.scalar(select(func.count()).select_from(Job))
        return (round_.state, round_.phase, dict(round_.stats), events, all_events, tasks, jobs)


def _duplicated_events(factory: sessionmaker[Session], round_id: int) -> list[object]:
    """(sample, kind) pairs with more than one event in the round."""
    with transaction(factory) as session:
        return list(
            session.execute(
                select(PipelineEvent.sample_id, PipelineEvent.kind, func.count())
                .where(PipelineEvent.round_id == round_id, PipelineEvent.sample_id.is_not(None))
                .group_by(PipelineEvent.sample_id, PipelineEvent.kind)
                .having(func.count() > 1)
            )
        )


def _round_jobs(factory: sessionmaker[Session], round_id: int) -> list[str]:
    with transaction(factory) as session:
        return sorted(
            session.scalars(
                select(PipelineRoundJob.role).where(PipelineRoundJob.round_id == round_id)
            )
        )


@pytest.mark.parametrize("point", list(POINTS), ids=list(POINTS))
def test_a_restart_in_the_middle_of_a_step_resumes_it_once(
    point: str,
    loop: Loop,
    worker: FakeWorker,
    annotator: FakeAnnotator,
    settings: Settings,
    env: PipelineEnv,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = POINTS[point]
    round_id = spec.prepare(loop, worker, annotator)
    before = _snapshot(loop.factory, round_id)
    rules = stages.RULES[spec.kind]
    original = getattr(rules, spec.handler)
    assert original is not None

    def dies_halfway(*args: object) -> None:
        original(*args)  # everything written…
        raise PowerCut("the server died")  # …and never committed

    monkeypatch.setitem(
        stages.RULES, spec.kind, stages.RoundRules(**{**rules.__dict__, spec.handler: dies_halfway})
    )
    first = create_app(settings)
    Reconciler(first.state.session_factory, env=env, interval=1).run_once()
    first.state.engine.dispose()
    assert _snapshot(loop.factory, round_id) == before

    monkeypatch.setitem(stages.RULES, spec.kind, rules)
    restarted = create_app(settings)  # a new process: its own engine and reconciler
    reconciler = Reconciler(restarted.state.session_factory, env=env, interval=1)
    reconciler.run_once()
    after = _snapshot(loop.factory, round_id)
    assert after != before
    reconciler.run_once()  # nothing left to do: nothing changes
    assert _snapshot(loop.factory, round_id) == after
    restarted.state.engine.dispose()
    assert _duplicated_events(loop.factory, round_id) == []
    round_ = loop.round(round_id)
    assert round_.state is not RoundState.FAILED, round_.error
    roles = _round_jobs(loop.factory, round_id)
    assert len(roles) == len(set(roles))
    if point == "cross-validation folds":
        assert round_.phase == "cleanlab" and roles.count("cleanlab") == 1
    elif point == "junk iteration":
        assert round_.state is RoundState.REVIEWING  # its flags are queued, once
    else:
        assert round_.state is RoundState.DONE


def test_two_servers_reconciling_at_once_apply_the_results_once(
    loop: Loop,
    worker: FakeWorker,
    annotator: FakeAnnotator,
    settings: Settings,
    env: PipelineEnv,
) -> None:
    round_id = _cross_validation(loop, worker, annotator)
    apps = [create_app(settings) for _ in range(2)]
    reconcilers = [Reconciler(a.state.session_factory, env=env, interval=1) for a in apps]
    threads = [threading.Thread(target=r.run_once) for r in reconcilers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for reconciler in reconcilers:
        reconciler.run_once()
    for a in apps:
        a.state.engine.dispose()
    assert _duplicated_events(loop.factory, round_id) == []
    assert _round_jobs(loop.factory, round_id).count("cleanlab") == 1
    assert loop.round(round_id).phase == "cleanlab"
