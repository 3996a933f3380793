"""The default recipes' path through the loop: the dataset embedded in shards before a round
on embeddings, the kNN detector beside confident learning (and as the rule), and the final
training's use of rejected samples (app/pipeline/stages/embeddings.py, detectors.py, final.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.jobs import manifests
from app.models import Job, JobState, RoundKind, RoundState, Sample, SampleStatus, Stage, User
from app.pipeline import service
from app.pipeline.config import PipelineEnv
from ml.core.protocol.jobs import (
    EmbedSpec,
    JobKind,
    KnnSpec,
    TrainFinalSpec,
    TrainFoldSpec,
    TrainPredictSpec,
    parse_spec,
)
from tests.app.pipeline.factories import FakeAnnotator, Toy
from tests.app.pipeline.fake_worker import FakeWorker
from tests.app.pipeline.loop import Loop

#: Every step's recipe left to the defaults: heads on the bundled backbone's embeddings.
DEFAULT_RECIPES = {
    "junk_recipe": None,
    "fold_recipe": None,
    "pullback_recipes": None,
    "final_recipe": None,
}


@pytest.fixture
def loop(
    session_factory: sessionmaker[Session], env: PipelineEnv, toy: Toy, engineer: User
) -> Loop:
    return Loop(session_factory, env, toy, engineer)


def _jobs(loop: Loop, kind: JobKind | None = None) -> list[Job]:
    with transaction(loop.factory) as session:
        query = select(Job).where(Job.dataset_id == loop.toy.dataset_id).order_by(Job.id)
        if kind is not None:
            query = query.where(Job.kind == kind)
        return list(session.scalars(query))


def _settle(loop: Loop, worker: FakeWorker) -> None:
    for _ in range(6):
        ran = worker.run_all()
        result = loop.reconcile()
        if not ran and not result.changed:
            return


def _cross_validation(loop: Loop, worker: FakeWorker, **config: object) -> None:
    loop.create(folds=3, **{**DEFAULT_RECIPES, **config})
    loop.update(stage=Stage.LABEL)
    loop.start(RoundKind.CROSS_VALIDATION)
    _settle(loop, worker)


def test_a_round_on_embeddings_embeds_the_dataset_first_in_shards(
    loop: Loop, toy: Toy, worker: FakeWorker
) -> None:
    loop.create(folds=3, embed_shard_size=25, **DEFAULT_RECIPES)
    loop.update(stage=Stage.LABEL)
    cv = loop.start(RoundKind.CROSS_VALIDATION)

    assert cv.phase == "embed" and cv.state is RoundState.RUNNING
    embeds = _jobs(loop, JobKind.EMBED)
    specs = [parse_spec(job.spec) for job in embeds]
    assert all(isinstance(s, EmbedSpec) for s in specs)
    assert sum(s.samples.count for s in specs) == len(toy.given)  # type: ignore[union-attr]
    assert max(s.samples.count for s in specs) == 25  # type: ignore[union-attr]
    assert not _jobs(loop, JobKind.TRAIN_FOLD)

    worker.run_all()
    loop.reconcile()

    folds = [parse_spec(job.spec) for job in _jobs(loop, JobKind.TRAIN_FOLD)]
    assert len(folds) == 3 and loop.round(cv.id).phase == "folds"
    fold = folds[0]
    assert isinstance(fold, TrainFoldSpec) and fold.recipe == "pretrained-cpu"
    assert {ref.job_id for ref in fold.embeddings} == {job.id for job in embeds}
    assert loop.round(cv.id).stats["embedding"]["missing"] == len(toy.given)


def test_embedded_images_are_not_embedded_again(loop: Loop, toy: Toy, worker: FakeWorker) -> None:
    _cross_validation(loop, worker)
    before = len(_jobs(loop, JobKind.EMBED))

    pull = loop.start(RoundKind.PULL_BACK)

    assert pull.phase == "model" and len(_jobs(loop, JobKind.EMBED)) == before
    [job] = _jobs(loop, JobKind.TRAIN_PREDICT)
    spec = parse_spec(job.spec)
    assert isinstance(spec, TrainPredictSpec) and spec.recipe == "pretrained-cpu-pullback-a"
    assert spec.embeddings


def test_a_changed_image_is_the_only_one_embedded_again(
    loop: Loop, toy: Toy, worker: FakeWorker
) -> None:
    _cross_validation(loop, worker)
    changed = min(toy.given)
    with transaction(loop.factory) as session:
        session.execute(update(Sample).where(Sample.id == changed).values(sha256="ab" * 32))
    before = {job.id for job in _jobs(loop, JobKind.EMBED)}

    pull = loop.start(RoundKind.PULL_BACK)

    assert pull.phase == "embed"
    [new] = [job for job in _jobs(loop, JobKind.EMBED) if job.id not in before]
    spec = parse_spec(new.spec)
    assert isinstance(spec, EmbedSpec) and spec.samples.count == 1


def test_knn_runs_beside_confident_learning_and_is_recorded(
    loop: Loop, toy: Toy, worker: FakeWorker
) -> None:
    _cross_validation(loop, worker)

    [cv] = loop.rounds()
    assert cv.state is RoundState.DONE
    [knn] = _jobs(loop, JobKind.KNN)
    spec = parse_spec(knn.spec)
    assert isinstance(spec, KnnSpec) and spec.k == 10 and spec.embeddings
    states = loop.states()
    assert {states[sid].knn_issue for sid in toy.noisy} == {True}
    assert {states[sid].knn_issue for sid in set(toy.given) - toy.noisy} == {False}
    assert cv.stats["knn"]["flagged"] == len(toy.noisy) and cv.stats["knn"]["agreement"] == 1.0
    rejected = {sid for sid, row in states.items() if row.status is SampleStatus.REJECTED}
    assert rejected == toy.noisy


def test_the_knn_rule_decides_what_is_rejected(loop: Loop, toy: Toy, worker: FakeWorker) -> None:
    wrong_folds = min(toy.noisy)

    def folds_keep_one_noisy_label(sample_id: int, class_ids: list[int]) -> list[int]:
        best = toy.given[sample_id] if sample_id == wrong_folds else toy.true[sample_id]
        best = best if best is not None else toy.given[sample_id]
        return [best, *sorted(c for c in class_ids if c != best)]

    worker.ranking = folds_keep_one_noisy_label
    _cross_validation(loop, worker, rule="knn")

    [cv] = loop.rounds()
    assert cv.state is RoundState.DONE and cv.stats["rule"] == "knn"
    statuses = loop.statuses()
    # The folds kept it; kNN (from the truth, in the fake worker) rejects it, and decides.
    assert statuses[wrong_folds] is SampleStatus.REJECTED
    assert {sid for sid, st in statuses.items() if st is SampleStatus.REJECTED} == toy.noisy


def test_the_knn_rule_fails_the_round_when_knn_cannot_run(
    loop: Loop, toy: Toy, worker: FakeWorker
) -> None:
    worker.fail_kinds = {"knn"}
    _cross_validation(loop, worker, rule="knn")

    [cv] = loop.rounds()
    assert cv.state is RoundState.FAILED and "knn" in (cv.error or "")
    assert SampleStatus.REJECTED not in set(loop.statuses().values())


def test_final_training_offers_rejected_samples_without_their_labels(
    loop: Loop, toy: Toy, worker: FakeWorker, annotator: FakeAnnotator
) -> None:
    _cross_validation(loop, worker, final_rejects="soft", reject_weight=0.3, min_eval_samples=5)
    rejected = {sid for sid, st in loop.statuses().items() if st is SampleStatus.REJECTED}
    cv_folds = {job.id for job in _jobs(loop, JobKind.TRAIN_FOLD)}

    final = loop.start(RoundKind.FINAL_TRAINING)
    if final.phase == "embed":
        worker.run_all()
        loop.reconcile()

    [job] = _jobs(loop, JobKind.TRAIN_FINAL)
    spec = parse_spec(job.spec)
    assert isinstance(spec, TrainFinalSpec)
    assert spec.rejects == "soft" and spec.reject_weight == 0.3
    assert {ref.job_id for ref in spec.probs} == cv_folds

    manifest = manifests.load_manifest(loop.env.data_dir, spec.train.sha256)
    unlabelled = {
        int(sid)
        for sid, label in zip(manifest.sample_ids, manifest.labels, strict=True)
        if label < 0
    }
    assert unlabelled == rejected
    assert loop.round(final.id).stats["rejected_offered"] == len(rejected)


def test_a_failed_embed_job_fails_the_round_and_a_retry_embeds_then_starts(
    loop: Loop, toy: Toy, worker: FakeWorker
) -> None:
    loop.create(folds=3, **DEFAULT_RECIPES)
    loop.update(stage=Stage.LABEL)
    cv = loop.start(RoundKind.CROSS_VALIDATION)
    worker.fail_kinds = {"embed"}
    worker.run_all()
    loop.reconcile()
    assert loop.round(cv.id).state is RoundState.FAILED

    worker.fail_kinds = set()
    with transaction(loop.factory) as session:
        service.retry_round(session, dataset=loop.dataset(session), round_id=cv.id, env=loop.env)
    _settle(loop, worker)

    assert loop.round(cv.id).state is RoundState.DONE
    assert all(j.state is JobState.SUCCEEDED for j in _jobs(loop, JobKind.TRAIN_FOLD))
