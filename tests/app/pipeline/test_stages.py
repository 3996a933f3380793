"""Every step of the loop with stubbed model outputs (the fake worker) and answers from the
truth (the fake annotator): what each queues, what each decision does to a sample, the
estimates, failures and retries, request keys and auto mode."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.errors import Invalid
from app.models import (
    ClassState,
    EventKind,
    Job,
    JobState,
    ReviewDecision,
    ReviewTask,
    RoundKind,
    RoundState,
    SampleStatus,
    Stage,
    TaskKind,
    TaskState,
    User,
    Verdict,
    utcnow,
)
from app.pipeline import reconcile, service, stages
from app.pipeline.config import PipelineEnv
from app.pipeline.estimates import clopper_pearson
from app.pipeline.service import RoundOpen
from app.pipeline.stages.context import RoundContext, StepRefused
from app.pipeline.verdicts import WATERMARK_GRACE
from app.review import repository as review_repository
from app.review import service as review
from ml.core.protocol.jobs import TrainFinalSpec, parse_spec
from tests.app.pipeline.factories import (
    FakeAnnotator,
    FakeWorker,
    Toy,
    count_events,
    count_tasks,
    missing_some,
)
from tests.app.pipeline.loop import Loop
from tests.app.review.factories import make_user


@pytest.fixture
def loop(
    session_factory: sessionmaker[Session], env: PipelineEnv, toy: Toy, engineer: User
) -> Loop:
    return Loop(session_factory, env, toy, engineer)


def _tasks(factory: sessionmaker[Session], source: str) -> list[ReviewTask]:
    with transaction(factory) as session:
        return list(
            session.scalars(
                select(ReviewTask).where(ReviewTask.source == source).order_by(ReviewTask.id)
            )
        )


def _jobs(factory: sessionmaker[Session], dataset_id: int) -> list[Job]:
    with transaction(factory) as session:
        return list(
            session.scalars(select(Job).where(Job.dataset_id == dataset_id).order_by(Job.id))
        )


def _skip_to_label_stage(loop: Loop) -> None:
    loop.update(stage=Stage.LABEL)


# --- creation -----------------------------------------------------------------------------------


def test_a_new_pipeline_takes_every_usable_sample_as_a_candidate(loop: Loop, toy: Toy) -> None:
    loop.create()
    statuses = loop.statuses()
    assert len(statuses) == len(toy.given) + len(toy.duplicates)  # the broken file is left out
    assert {statuses[sid] for sid in toy.duplicates} == {SampleStatus.DUPLICATE}
    assert {statuses[sid] for sid in toy.given} == {SampleStatus.CANDIDATE}
    with transaction(loop.factory) as session:
        assert count_events(session, toy.dataset_id, kind=EventKind.DUPLICATE) == 2


def test_creating_a_pipeline_again_returns_it_unchanged(loop: Loop, toy: Toy) -> None:
    first = loop.create(audit_size=7)
    with transaction(loop.factory) as session:
        again, created = service.create_pipeline(
            session, dataset=loop.dataset(session), config={"audit_size": 9}
        )
    assert not created and again.id == first.id and again.config["audit_size"] == 7


def test_an_invalid_config_is_refused_with_the_field_named(loop: Loop) -> None:
    with pytest.raises(Invalid, match="junk_threshold"):
        loop.create(junk_threshold=2.0)


# --- junk stage ---------------------------------------------------------------------------------


def test_the_junk_seed_queues_the_non_rgb_images_and_a_random_sample(loop: Loop, toy: Toy) -> None:
    loop.create(seed_random_samples=10)
    round_ = loop.start(RoundKind.JUNK_SEED)
    assert round_.state is RoundState.REVIEWING and round_.source == "junk seed 1"
    tasks = _tasks(loop.factory, "junk seed 1")
    assert {t.kind for t in tasks} == {TaskKind.JUNK_CHECK}
    first = {t.sample_id for t in tasks if t.priority == 1.0}
    assert first == toy.non_rgb
    assert len(tasks) == len(toy.non_rgb) + 10
    assert round_.stats == {"non_rgb": len(toy.non_rgb), "random": 10, "queued": len(tasks)}


def test_no_step_starts_while_a_round_is_under_review(loop: Loop) -> None:
    loop.create(seed_random_samples=3)
    loop.start(RoundKind.JUNK_SEED)
    with pytest.raises(RoundOpen, match="junk seed 1"):
        loop.start(RoundKind.JUNK_AUDIT)


def test_a_retried_start_with_the_same_key_returns_the_same_round(loop: Loop) -> None:
    loop.create(seed_random_samples=3)
    key = uuid.uuid4().hex
    first = loop.start(RoundKind.JUNK_SEED, request_key=key)
    again = loop.start(RoundKind.JUNK_SEED, request_key=key)
    assert again.id == first.id
    assert len(loop.rounds()) == 1
    assert len(_tasks(loop.factory, "junk seed 1")) == first.stats["queued"]


def test_junk_verdicts_make_samples_junk_and_the_seed_reports_its_precision(
    loop: Loop, toy: Toy, annotator: FakeAnnotator
) -> None:
    loop.create(seed_random_samples=10)
    loop.start(RoundKind.JUNK_SEED)
    annotator.review_all()
    loop.reconcile()
    [seed] = loop.rounds()
    assert seed.state is RoundState.DONE
    tasks = _tasks(loop.factory, "junk seed 1")
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
        [decision] = [d for d in review.sample_history(session, junk) if d.verdict is Verdict.JUNK]
        review.undo(
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
    assert _jobs(loop.factory, toy.dataset_id) == []


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
    [job] = _jobs(loop.factory, toy.dataset_id)
    spec = parse_spec(job.spec)
    assert spec.kind.value == "train_junk"
    worker.run_all()
    loop.reconcile()
    iteration = loop.round(iteration.id)
    assert iteration.state is RoundState.REVIEWING
    tasks = _tasks(loop.factory, "junk iteration 1")
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
    audited = {t.sample_id for t in _tasks(loop.factory, audit.source)}
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
    flagged = {t.sample_id for t in _tasks(loop.factory, "junk iteration 1")}
    assert len(flagged) >= 3
    loop.finish(iteration.id)  # the engineer stops reviewing the flags one by one
    with pytest.raises(StepRefused, match="flag audit"):
        loop.start(RoundKind.BULK_ACCEPT)
    audit = loop.start(RoundKind.FLAG_AUDIT, threshold=0.95)
    audited = {t.sample_id for t in _tasks(loop.factory, audit.source)}
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


# --- label stage --------------------------------------------------------------------------------


def _cross_validation(loop: Loop, worker: FakeWorker) -> None:
    _skip_to_label_stage(loop)
    cv = loop.start(RoundKind.CROSS_VALIDATION)
    assert cv.state is RoundState.RUNNING
    worker.run_all()  # the folds
    loop.reconcile()
    assert loop.round(cv.id).phase == "cleanlab"
    worker.run_all()  # confident learning
    loop.reconcile()


def test_cross_validation_applies_the_top_k_rule_and_records_cleanlab_beside_it(
    loop: Loop, toy: Toy, worker: FakeWorker
) -> None:
    loop.create(folds=3)
    _cross_validation(loop, worker)
    [cv] = loop.rounds()
    assert cv.state is RoundState.DONE and cv.params["k"] == 1
    jobs = _jobs(loop.factory, toy.dataset_id)
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
    _cross_validation(loop, worker)
    assert {s for s, st in loop.statuses().items() if st is SampleStatus.REJECTED} == (
        toy.noisy | unlucky
    )
    worker.ranking = None  # the pull-back model gets them right
    pull = loop.start(RoundKind.PULL_BACK)
    [job] = [j for j in _jobs(loop.factory, toy.dataset_id) if j.kind.value == "train_predict"]
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
    _cross_validation(loop, worker)
    sample = loop.start(RoundKind.HUMAN_SAMPLE)
    tasks = _tasks(loop.factory, sample.source)
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


def test_dropping_a_class_takes_its_samples_out_and_an_undo_brings_them_back(
    loop: Loop, toy: Toy, annotator: FakeAnnotator
) -> None:
    loop.create(min_class_size=1000)
    loop.update(stage=Stage.CLASS)
    review_round = loop.start(RoundKind.CLASS_REVIEW)
    tasks = _tasks(loop.factory, review_round.source)
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
        review.undo(session, user=second.user, decision_id=decision_id, idempotency_key="u")
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
    [job] = _jobs(loop.factory, toy.dataset_id)
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
    _cross_validation(loop, worker)
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
    job = next(j for j in _jobs(loop.factory, toy.dataset_id) if j.kind.value == "train_final")
    spec = parse_spec(job.spec)
    assert isinstance(spec, TrainFinalSpec)
    assert len(spec.teachers) == 3  # distilled from the fold models


@pytest.mark.parametrize(("hardware", "teachers"), [("cpu", 0), ("gpu", 3)])
def test_by_default_the_final_training_distils_from_the_folds_only_on_gpus(
    loop: Loop, toy: Toy, worker: FakeWorker, hardware: str, teachers: int
) -> None:
    loop.create(folds=3, hardware=hardware)
    _cross_validation(loop, worker)
    loop.update(stage=Stage.FINAL)
    final = loop.start(RoundKind.FINAL_TRAINING)
    job = next(j for j in _jobs(loop.factory, toy.dataset_id) if j.kind.value == "train_final")
    spec = parse_spec(job.spec)
    assert isinstance(spec, TrainFinalSpec)
    assert len(spec.teachers) == teachers
    note = final.stats["teacher_note"]
    assert note == "no distillation" if teachers == 0 else note.startswith("distilled from")


# --- failures -----------------------------------------------------------------------------------


def test_a_failed_job_fails_its_round_and_a_retry_runs_it_again(
    loop: Loop, toy: Toy, worker: FakeWorker
) -> None:
    loop.create(folds=3)
    _skip_to_label_stage(loop)
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
    _skip_to_label_stage(loop)
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


# --- auto mode ----------------------------------------------------------------------------------


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
    jobs = _jobs(loop.factory, toy.dataset_id)
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
    original = review_repository.decisions_after
    calls: list[int] = []

    def late(*args: object, **kwargs: object) -> list[review_repository.DecisionStub]:
        # The first read misses the decisions, as if they committed just after it.
        calls.append(1)
        return [] if len(calls) == 1 else original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(review_repository, "decisions_after", late)
    loop.reconcile()
    [seed] = loop.rounds()
    assert seed.state is RoundState.DONE
    statuses = loop.statuses()
    assert {
        sid for sid, st in statuses.items() if st is SampleStatus.JUNK
    } == toy.non_rgb & toy.junk
