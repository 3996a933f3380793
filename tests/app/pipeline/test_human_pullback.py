"""The calibrated pull-back after the human sample (app/pipeline/stages/labels.py, with
:func:`ml.core.cleaning.topk.calibrated_pullback`): people's verdicts on a random sample of the
rejected set say where along the model's probability of the given label rejects are mostly
right, and the unchecked rejects there come back."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.models import (
    JobResult,
    PipelineRound,
    PipelineSample,
    RoundKind,
    SampleStatus,
    Stage,
    User,
)
from app.pipeline.config import PipelineEnv
from tests.app.pipeline.factories import FakeAnnotator, Toy, make_toy
from tests.app.pipeline.fake_worker import FakeWorker, missing_some
from tests.app.pipeline.loop import Loop


@pytest.fixture
def toy(session_factory: sessionmaker[Session], tmp_path: Path) -> Toy:
    # 180 samples, every fifth label wrong, no junk.
    with transaction(session_factory) as session:
        return make_toy(session, tmp_path / "toy", per_class=60, junk_every=10_000)


@pytest.fixture
def loop(
    session_factory: sessionmaker[Session], env: PipelineEnv, toy: Toy, engineer: User
) -> Loop:
    return Loop(session_factory, env, toy, engineer)


def _rejected_with_scores(loop: Loop, worker: FakeWorker, unlucky: set[int]) -> None:
    """Cross-validation whose models reject the wrong labels and the ``unlucky`` right ones;
    then the stored probability of the given label: about 0.02 for the wrong labels, 0.4 for
    the unlucky (a model that was unsure of them)."""
    toy = loop.toy
    worker.ranking = missing_some(toy, unlucky)
    loop.update(stage=Stage.LABEL)
    loop.start(RoundKind.CROSS_VALIDATION)
    for _ in range(3):
        worker.run_all()
        loop.reconcile()
    with transaction(loop.factory) as session:
        for sid in toy.noisy | unlucky:
            score = 0.4 + sid % 7 / 100 if sid in unlucky else 0.01 + sid % 3 / 100
            job_id = session.get_one(PipelineSample, sid).pred_job_id
            session.execute(
                update(JobResult)
                .where(JobResult.job_id == job_id, JobResult.sample_id == sid)
                .values(label_prob=score)
            )


def _human_sample(loop: Loop, annotator: FakeAnnotator) -> PipelineRound:
    """The human sample, every task answered from the truth, and the round finished."""
    sample = loop.start(RoundKind.HUMAN_SAMPLE)
    annotator.review_all()
    loop.reconcile()
    return sample


def test_unchecked_rejects_where_people_found_the_labels_right_come_back(
    loop: Loop, toy: Toy, worker: FakeWorker, annotator: FakeAnnotator
) -> None:
    loop.create(folds=3, human_fraction=0.5)
    unlucky = {sid for sid in toy.given if sid % 3 == 0} - toy.noisy
    _rejected_with_scores(loop, worker, unlucky)
    rejected = {s for s, st in loop.statuses().items() if st is SampleStatus.REJECTED}
    assert rejected == toy.noisy | unlucky

    sample = _human_sample(loop, annotator)

    states = loop.states()
    checked = {sid for sid in rejected if states[sid].human_verdict is not None}
    unchecked = rejected - checked
    assert len(checked) == len(rejected) // 2
    assert unchecked & unlucky and unchecked & toy.noisy
    for sid in unchecked & unlucky:
        assert states[sid].status is SampleStatus.PULLED_BACK
    for sid in unchecked & toy.noisy:
        assert states[sid].status is SampleStatus.REJECTED
    stats = loop.round(sample.id).stats["human_pullback"]
    assert stats["judged"] == len(checked)
    assert stats["candidates"] == len(unchecked)
    assert stats["pulled_back"] == len(unchecked & unlucky)
    assert 0.4 <= stats["from_probability"] < 0.47


def test_nothing_comes_back_where_people_found_the_rejects_mostly_wrong(
    loop: Loop, toy: Toy, worker: FakeWorker, annotator: FakeAnnotator
) -> None:
    loop.create(folds=3, human_fraction=0.5)
    # Only a few right labels among the rejects, at every score: rejecting them all is right.
    unlucky = {sid for sid in toy.given if sid % 11 == 0} - toy.noisy
    _rejected_with_scores(loop, worker, unlucky)
    with transaction(loop.factory) as session:
        # The models were as unsure of the wrong labels as of the right ones.
        session.execute(
            update(JobResult).where(JobResult.sample_id.in_(toy.noisy)).values(label_prob=0.42)
        )

    sample = _human_sample(loop, annotator)

    stats = loop.round(sample.id).stats["human_pullback"]
    assert stats["pulled_back"] == 0 and stats["candidates"] > 0
    assert SampleStatus.PULLED_BACK not in set(loop.statuses().values())


def test_the_calibrated_pullback_can_be_turned_off(
    loop: Loop, toy: Toy, worker: FakeWorker, annotator: FakeAnnotator
) -> None:
    loop.create(folds=3, human_fraction=0.5, human_pullback=None)
    unlucky = {sid for sid in toy.given if sid % 3 == 0} - toy.noisy
    _rejected_with_scores(loop, worker, unlucky)

    sample = _human_sample(loop, annotator)

    assert loop.round(sample.id).stats["human_pullback"] == {"skipped": "off"}
    assert SampleStatus.PULLED_BACK not in set(loop.statuses().values())
