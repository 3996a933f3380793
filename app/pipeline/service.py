"""The pipeline's commands: create a dataset's pipeline, configure it, start steps, advance,
finish, cancel and retry rounds, reconcile now. (What it shows: :mod:`app.pipeline.reports`.)

Every command locks the pipeline's row first, so commands, the reconcilers of every server
process and retries are serialised per dataset. A step starts only when no round is open (a
round still running or still under review); a start that carries a ``request_key`` already used
returns that round again, so a retried request never queues twice.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.errors import Conflict, Invalid, NotFound
from app.jobs import service as jobs
from app.logging import get_logger
from app.models import (
    ClassState,
    Dataset,
    EventKind,
    JobState,
    Pipeline,
    PipelineClass,
    PipelineRound,
    RoundKind,
    RoundState,
    SampleStatus,
    Stage,
    TaskKind,
    User,
    utcnow,
)
from app.pipeline import event_repository, reconcile, repository, sample_repository, verdicts
from app.pipeline.config import PipelineEnv, config_json, merged_config, parse_config
from app.pipeline.reconcile import ReconcileResult
from app.pipeline.rules import NextStep
from app.pipeline.stages import lifecycle
from app.pipeline.stages.context import StepParams, finish, round_context
from app.review.repository import tasks as task_repository
from app.review.repository import verdicts as verdict_repository

log = get_logger(__name__)


class RoundOpen(Conflict):
    """Another round is still running or under review."""

    code = "round_open"


def get_pipeline(session: Session, dataset: Dataset) -> Pipeline:
    pipeline = repository.get_pipeline(session, dataset_id=dataset.id)
    if pipeline is None:
        raise NotFound(f"dataset {dataset.name!r} has no pipeline: create it first")
    return pipeline


def _locked(session: Session, dataset: Dataset) -> Pipeline:
    pipeline = repository.get_pipeline(session, dataset_id=dataset.id, for_update=True)
    if pipeline is None:
        raise NotFound(f"dataset {dataset.name!r} has no pipeline: create it first")
    return pipeline


def get_round(session: Session, pipeline: Pipeline, round_id: int) -> PipelineRound:
    round_ = repository.get_round(session, round_id)
    if round_ is None or round_.pipeline_id != pipeline.id:
        raise NotFound(f"no round {round_id} in this pipeline")
    return round_


def ensure_samples(session: Session, pipeline: Pipeline) -> int:
    """Adds state rows for samples imported since (duplicates noted as such); returns how
    many were added."""
    now = utcnow()
    added = sample_repository.init_samples(session, pipeline.dataset_id, now)
    sample_repository.init_classes(session, pipeline.dataset_id, now)
    duplicates = sample_repository.new_duplicates(session, pipeline.dataset_id)
    event_repository.insert_events(
        session,
        [
            event_repository.event_row(
                pipeline.dataset_id,
                kind=EventKind.DUPLICATE,
                now=now,
                sample_id=sample_id,
                class_id=class_id,
                to_status=SampleStatus.DUPLICATE,
                detail=f"a byte-identical copy of sample {original}",
            )
            for sample_id, original, class_id in duplicates
        ],
    )
    return added


def create_pipeline(
    session: Session,
    *,
    dataset: Dataset,
    config: dict[str, Any] | None = None,
    auto: bool = False,
    user: User | None = None,
) -> tuple[Pipeline, bool]:
    """The dataset's pipeline, created (with every usable sample as a candidate and the
    decisions made so far applied) when it has none. Returns it and whether it was created;
    an existing pipeline is returned as it is."""
    existing = repository.get_pipeline(session, dataset_id=dataset.id, for_update=True)
    if existing is not None:
        return existing, False
    parsed = parse_config(config or {})
    pipeline = Pipeline(
        dataset_id=dataset.id,
        stage=Stage.JUNK,
        auto=auto,
        config=config_json(parsed),
        decisions_seen_id=0,
        note="",
        created_by_id=user.id if user else None,
    )
    session.add(pipeline)
    session.flush()
    added = ensure_samples(session, pipeline)
    if added == 0:
        raise Invalid(f"dataset {dataset.name!r} has no usable samples")
    verdicts.sync_decisions(session, pipeline, now=utcnow(), full=True)
    log.info("pipeline.created", dataset_id=dataset.id, samples=added, auto=auto)
    return pipeline, True


def update_pipeline(
    session: Session,
    *,
    dataset: Dataset,
    config: dict[str, Any] | None = None,
    auto: bool | None = None,
    stage: Stage | None = None,
) -> Pipeline:
    """Changes the config (merged key by key; None sets a key back to its default), turns auto
    mode on or off, or moves to a stage (e.g. to skip the junk stage)."""
    pipeline = _locked(session, dataset)
    if config is not None:
        pipeline.config = config_json(merged_config(pipeline.config, config))
    if auto is not None:
        pipeline.auto = auto
        if auto:
            pipeline.note = ""
    if stage is not None and stage is not pipeline.stage:
        pipeline.stage = stage
        pipeline.note = f"moved to the {stage.value} stage"
    session.flush()
    return pipeline


def _open_rounds(session: Session, pipeline: Pipeline) -> list[PipelineRound]:
    return [r for r in repository.list_rounds(session, pipeline.id) if r.state.is_open]


def start_step(
    session: Session,
    *,
    dataset: Dataset,
    kind: RoundKind,
    params: StepParams | None = None,
    env: PipelineEnv,
    user: User | None = None,
    request_key: str | None = None,
) -> tuple[PipelineRound, bool]:
    """Starts a round of ``kind``; returns it and whether it is new (False: ``request_key``
    was used before and that round is returned).

    Raises:
        RoundOpen: a round is still running or under review.
        StepRefused: the step cannot start now (the message says why).
    """
    pipeline = _locked(session, dataset)
    if request_key is not None:
        previous = repository.round_by_request_key(session, pipeline.id, request_key)
        if previous is not None:
            return previous, False
    verdicts.sync_decisions(session, pipeline, now=utcnow())
    reconcile.advance_rounds(session, pipeline, dataset, env=env, now=utcnow())
    busy = _open_rounds(session, pipeline)
    if busy:
        names = ", ".join(f"{r.source} ({r.state.value})" for r in busy)
        raise RoundOpen(
            f"{names} must finish first (or finish its review early)",
            round_ids=[r.id for r in busy],
        )
    ensure_samples(session, pipeline)
    round_ = lifecycle.start_round(
        session,
        pipeline=pipeline,
        dataset=dataset,
        kind=kind,
        params=params or StepParams(),
        env=env,
        user=user,
        request_key=request_key,
    )
    return round_, True


def preview_next(session: Session, pipeline: Pipeline) -> NextStep | None:
    """What :func:`advance` (and auto mode) would do now."""
    return reconcile.planned_step(session, pipeline)


def advance(
    session: Session,
    *,
    dataset: Dataset,
    env: PipelineEnv,
    user: User | None = None,
    request_key: str | None = None,
) -> tuple[PipelineRound | None, NextStep | None]:
    """Starts the step auto mode would start now (one step), or moves to the next stage.
    Returns the round started (None when the step was only a stage change, or there is
    nothing to do) and the step."""
    pipeline = _locked(session, dataset)
    if request_key is not None:
        previous = repository.round_by_request_key(session, pipeline.id, request_key)
        if previous is not None:
            return previous, NextStep(previous.stage, previous.kind, "already started")
    verdicts.sync_decisions(session, pipeline, now=utcnow())
    reconcile.advance_rounds(session, pipeline, dataset, env=env, now=utcnow())
    busy = _open_rounds(session, pipeline)
    if busy:
        raise RoundOpen(
            f"{busy[0].source} is {busy[0].state.value}: nothing to advance until it finishes",
            round_ids=[r.id for r in busy],
        )
    step = preview_next(session, pipeline)
    if step is None:
        return None, None
    pipeline.stage = step.stage
    pipeline.note = step.reason
    if step.kind is None:
        return None, step
    ensure_samples(session, pipeline)
    round_ = lifecycle.start_round(
        session,
        pipeline=pipeline,
        dataset=dataset,
        kind=step.kind,
        params=StepParams(),
        env=env,
        user=user,
        request_key=request_key,
    )
    return round_, step


def finish_round(
    session: Session, *, dataset: Dataset, round_id: int, env: PipelineEnv
) -> PipelineRound:
    """Ends a round under review now, with what has been decided so far (its remaining tasks
    stay in the queue, and their decisions still apply to the samples when they come)."""
    pipeline = _locked(session, dataset)
    round_ = get_round(session, pipeline, round_id)
    if round_.state is not RoundState.REVIEWING:
        raise Conflict(f"{round_.source} is {round_.state.value}, not under review")
    verdicts.sync_decisions(session, pipeline, now=utcnow())
    ctx = round_context(session, pipeline=pipeline, dataset=dataset, round_=round_, env=env)
    lifecycle.close_review(ctx)
    round_.stats = {**round_.stats, "finished_early": True}
    session.flush()
    return round_


def cancel_round(
    session: Session, *, dataset: Dataset, round_id: int, env: PipelineEnv
) -> PipelineRound:
    """Cancels an open round: its queued and running jobs are cancelled and its waiting tasks
    withdrawn. What it already applied stays."""
    pipeline = _locked(session, dataset)
    round_ = get_round(session, pipeline, round_id)
    if not round_.state.is_open and round_.state is not RoundState.FAILED:
        raise Conflict(f"{round_.source} is {round_.state.value}: nothing to cancel")
    for job, _ in repository.round_jobs(session, round_.id):
        if not job.state.is_final:
            jobs.cancel_job(session, job_id=job.id)
    task_repository.cancel_pending_tasks(
        session,
        dataset.id,
        kinds=list(TaskKind),
        source=round_.source,
    )
    ctx = round_context(session, pipeline=pipeline, dataset=dataset, round_=round_, env=env)
    finish(ctx, RoundState.CANCELLED)
    session.flush()
    return round_


def retry_round(
    session: Session, *, dataset: Dataset, round_id: int, env: PipelineEnv
) -> PipelineRound:
    """Queues a failed round's failed or cancelled jobs again (a fresh budget of attempts);
    the round runs again from where it stopped."""
    pipeline = _locked(session, dataset)
    round_ = get_round(session, pipeline, round_id)
    if round_.state is not RoundState.FAILED:
        raise Conflict(f"{round_.source} is {round_.state.value}: only a failed round is retried")
    busy = _open_rounds(session, pipeline)
    if busy:
        raise RoundOpen(f"{busy[0].source} is open", round_ids=[r.id for r in busy])
    phase_jobs = set(round_.params.get("phase_jobs", []))
    retried = 0
    for job, _ in repository.round_jobs(session, round_.id):
        if job.id in phase_jobs and job.state in (JobState.FAILED, JobState.CANCELLED):
            jobs.retry_job(session, job_id=job.id)
            retried += 1
    if not retried:
        raise Conflict(f"{round_.source} has no failed job to retry; start a new round")
    round_.state = RoundState.RUNNING
    round_.error = None
    round_.finished_at = None
    session.flush()
    return round_


def reconcile_now(
    session: Session, *, dataset: Dataset, env: PipelineEnv, full: bool = False
) -> ReconcileResult:
    """Does now what the background reconciler does every few seconds (waiting for the lock);
    ``full`` re-reads every decision ever made on the dataset."""
    pipeline = get_pipeline(session, dataset)
    result = reconcile.reconcile_pipeline(
        session, env=env, pipeline_id=pipeline.id, wait=True, full=full
    )
    assert result is not None
    return result


def restore_class(
    session: Session, *, dataset: Dataset, class_id: int, user: User
) -> PipelineClass:
    """Undoes a class drop (an engineer's call): the class is kept, its samples return to the
    training set, and every vote on it so far is set aside (only later votes count). Restoring
    a class that was restored and not dropped since changes nothing.

    Raises:
        NotFound: the class is not one of the dataset's.
        Conflict: the class is not dropped.
    """
    pipeline = _locked(session, dataset)
    row = sample_repository.pipeline_classes(session, pipeline.dataset_id).get(class_id)
    if row is None:
        raise NotFound(f"class {class_id} is not a class of dataset {dataset.name!r}")
    name = sample_repository.class_names(session, dataset.id).get(class_id, f"class {class_id}")
    if row.state is not ClassState.DROPPED:
        if row.state is ClassState.KEPT and row.restored_at is not None:
            return row  # a retried restore
        raise Conflict(f"class {name!r} is {row.state.value}, not dropped: nothing to restore")
    now = utcnow()
    row.state, row.decision_id = ClassState.KEPT, None
    row.votes_after_id = verdict_repository.last_class_decision_id(session, dataset.id, class_id)
    row.restored_at, row.restored_by_id = now, user.id
    session.flush()
    event_repository.insert_events(
        session,
        [
            event_repository.event_row(
                dataset.id,
                kind=EventKind.CLASS_KEPT,
                now=now,
                round_id=row.round_id,
                class_id=class_id,
                detail=f"class restored by {user.username}; its votes so far set aside",
            )
        ],
    )
    samples = verdicts.restatus_classes(
        session, dataset_id=dataset.id, class_ids={class_id}, now=now
    )
    log.info(
        "pipeline.class.restored",
        dataset_id=dataset.id,
        class_id=class_id,
        user=user.username,
        samples=samples,
    )
    return row
