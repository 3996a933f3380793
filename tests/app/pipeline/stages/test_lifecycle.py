"""A round's life when jobs fail: a failed job fails its round and a retry runs it again; a
failed detector leaves the top-k verdicts."""

from __future__ import annotations

from app.db import transaction
from app.models import (
    RoundKind,
    RoundState,
    Stage,
)
from app.pipeline import service
from tests.app.pipeline.factories import Toy
from tests.app.pipeline.fake_worker import FakeWorker
from tests.app.pipeline.loop import Loop


def test_a_failed_job_fails_its_round_and_a_retry_runs_it_again(
    loop: Loop, toy: Toy, worker: FakeWorker
) -> None:
    loop.create(folds=3)
    loop.update(stage=Stage.LABEL)
    cv = loop.start(RoundKind.CROSS_VALIDATION)
    worker.fail_kinds = {"train_fold"}
    worker.run_one()
    loop.reconcile()
    cv = loop.round(cv.id)
    assert cv.state is RoundState.FAILED and "boom" in (cv.error or "")
    with transaction(loop.factory) as session:
        service.retry_round(session, dataset=loop.dataset(session), round_id=cv.id, env=loop.env)
    worker.fail_kinds = set()
    worker.run_all()
    loop.reconcile()
    worker.run_all()
    loop.reconcile()
    assert loop.round(cv.id).state is RoundState.DONE


def test_confident_learning_failing_leaves_the_top_k_verdicts(
    loop: Loop, toy: Toy, worker: FakeWorker
) -> None:
    loop.create(folds=3)
    loop.update(stage=Stage.LABEL)
    cv = loop.start(RoundKind.CROSS_VALIDATION)
    worker.run_all(limit=3)
    loop.reconcile()
    worker.fail_kinds = {"confident_learning"}
    worker.run_all()
    loop.reconcile()
    cv = loop.round(cv.id)
    assert cv.state is RoundState.DONE
    assert "boom" in cv.stats["confident_learning"]["error"]
    assert cv.stats["rejected"] == len(toy.noisy)
