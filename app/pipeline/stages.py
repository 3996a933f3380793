"""The life of a round: the registry of what each kind does when it starts, when its jobs
have succeeded and when its review tasks are all decided (:data:`RULES`; the kinds live in
:mod:`~app.pipeline.junk`, :mod:`~app.pipeline.labels` and :mod:`~app.pipeline.final`), and
starting and advancing rounds.

Every function here runs inside the caller's transaction with the pipeline row locked, so a
round's jobs, tasks, state changes and events commit together or not at all: a server that
dies halfway leaves the round as it was, and the next reconcile does the step again, once.
Task creation is idempotent per (kind, subject, source) besides (see ``review.create_tasks``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from app.logging import get_logger
from app.models import (
    Dataset,
    Job,
    JobState,
    Pipeline,
    PipelineRound,
    RoundKind,
    RoundState,
    TaskState,
    User,
    utcnow,
)
from app.pipeline import repository
from app.pipeline.config import (
    PipelineEnv,
    RecipeChoice,
    parse_config,
)
from app.pipeline.embeddings import queue_embedding
from app.pipeline.final import (
    final_training_done,
    finish_class_review,
    start_class_review,
    start_final_training,
)
from app.pipeline.junk import (
    finish_flag_audit,
    finish_junk_audit,
    finish_junk_review,
    junk_iteration_done,
    start_bulk_accept,
    start_flag_audit,
    start_junk_audit,
    start_junk_iteration,
    start_junk_seed,
)
from app.pipeline.labels import (
    cleanlab_failed,
    cross_validation_done,
    finish_human_sample,
    pull_back_done,
    start_cross_validation,
    start_human_sample,
    start_pull_back,
)
from app.pipeline.rounds import (
    STAGE_ORDER,
    Ctx,
    StepParams,
    StepRefused,
    finish,
    round_source,
)
from app.review import repository as review_repository

log = get_logger(__name__)


# --- the registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundRules:
    """What a kind of round does at each point of its life."""

    start: Callable[[Ctx], None]
    jobs_done: Callable[[Ctx, list[Job]], None] | None = None
    review_done: Callable[[Ctx], None] | None = None


RULES: dict[RoundKind, RoundRules] = {
    RoundKind.JUNK_SEED: RoundRules(start_junk_seed, review_done=finish_junk_review),
    RoundKind.JUNK_ITERATION: RoundRules(
        start_junk_iteration, junk_iteration_done, finish_junk_review
    ),
    RoundKind.FLAG_AUDIT: RoundRules(start_flag_audit, review_done=finish_flag_audit),
    RoundKind.BULK_ACCEPT: RoundRules(start_bulk_accept),
    RoundKind.JUNK_AUDIT: RoundRules(start_junk_audit, review_done=finish_junk_audit),
    RoundKind.CROSS_VALIDATION: RoundRules(start_cross_validation, cross_validation_done),
    RoundKind.PULL_BACK: RoundRules(start_pull_back, pull_back_done),
    RoundKind.HUMAN_SAMPLE: RoundRules(start_human_sample, review_done=finish_human_sample),
    RoundKind.CLASS_REVIEW: RoundRules(start_class_review, review_done=finish_class_review),
    RoundKind.FINAL_TRAINING: RoundRules(start_final_training, final_training_done),
}


# --- starting and advancing rounds --------------------------------------------------------------


def context(
    session: Session,
    *,
    pipeline: Pipeline,
    dataset: Dataset,
    round_: PipelineRound,
    env: PipelineEnv,
    user: User | None = None,
    now: datetime | None = None,
) -> Ctx:
    params = round_.params.get("step", {})
    return Ctx(
        session=session,
        pipeline=pipeline,
        dataset=dataset,
        round=round_,
        config=parse_config(pipeline.config),
        env=env,
        user=user,
        now=now or utcnow(),
        params=StepParams(
            recipe=RecipeChoice.model_validate(params["recipe"]) if "recipe" in params else None,
            **{k: v for k, v in params.items() if k != "recipe"},
        ),
    )


def start_round(
    session: Session,
    *,
    pipeline: Pipeline,
    dataset: Dataset,
    kind: RoundKind,
    params: StepParams,
    env: PipelineEnv,
    user: User | None,
    request_key: str | None,
    now: datetime | None = None,
) -> PipelineRound:
    """Creates the round and starts it (the caller holds the pipeline's lock and has checked
    that no round is open). A step that refuses leaves nothing behind."""
    now = now or utcnow()
    number = repository.next_round_number(session, pipeline.id, kind)
    round_ = PipelineRound(
        pipeline_id=pipeline.id,
        dataset_id=dataset.id,
        kind=kind,
        number=number,
        stage=kind.stage,
        state=RoundState.RUNNING,
        phase="",
        source=round_source(kind, number),
        request_key=request_key,
        params={"step": params.to_json()},
        stats={},
        created_by_id=user.id if user else None,
        created_at=now,
    )
    with session.begin_nested():
        session.add(round_)
        session.flush()
        ctx = context(
            session, pipeline=pipeline, dataset=dataset, round_=round_, env=env, user=user, now=now
        )
        if STAGE_ORDER.index(kind.stage) > STAGE_ORDER.index(pipeline.stage):
            pipeline.stage = kind.stage
        if not queue_embedding(ctx):
            RULES[kind].start(ctx)
        session.flush()
    log.info(
        "pipeline.round.started",
        dataset_id=dataset.id,
        round=round_.source,
        state=round_.state.value,
    )
    return round_


def advance_running(ctx: Ctx) -> bool:
    """Moves a running round on: once its current jobs have all succeeded, their results are
    applied; as soon as one has failed for good (or was cancelled), the round fails (its other
    jobs go on; a retry re-queues the failed ones). Returns whether it moved."""
    phase_jobs = set(ctx.round.params.get("phase_jobs", []))
    current = [
        job for job, _ in repository.round_jobs(ctx.session, ctx.round.id) if job.id in phase_jobs
    ]
    if not current:
        return False
    failed = [job for job in current if job.state.is_final and job.state is not JobState.SUCCEEDED]
    if not failed and not all(job.state.is_final for job in current):
        return False
    if failed:
        if ctx.round.kind is RoundKind.CROSS_VALIDATION and ctx.round.phase == "cleanlab":
            cleanlab_failed(ctx, failed, [job for job in current if job not in failed])
            return True
        ctx.round.error = "; ".join(
            f"job {job.id} {job.state.value}: {_last_line(job.error)}" for job in failed
        )
        finish(ctx, RoundState.FAILED)
        return True
    if ctx.round.params.get("embedding_pending"):
        _start_embedded(ctx)
        return True
    handler = RULES[ctx.round.kind].jobs_done
    assert handler is not None
    handler(ctx, current)
    return True


def _start_embedded(ctx: Ctx) -> None:
    """The round's own start, once its embed jobs have all succeeded."""
    ctx.round.phase = ""
    ctx.round.params = {**ctx.round.params, "phase_jobs": [], "embedding_pending": False}
    try:
        with ctx.session.begin_nested():
            RULES[ctx.round.kind].start(ctx)
    except StepRefused as refused:
        ctx.round.error = str(refused)
        finish(ctx, RoundState.FAILED)


def _last_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else "no reason given"


def review_open(ctx: Ctx) -> bool:
    """Whether the round still has tasks waiting or leased."""
    counts = review_repository.task_state_counts(ctx.session, ctx.dataset.id, ctx.round.source)
    return any(counts.get(state, 0) for state in (TaskState.PENDING, TaskState.LEASED))


def close_review(ctx: Ctx) -> None:
    handler = RULES[ctx.round.kind].review_done
    if handler is not None:
        handler(ctx)
    finish(ctx)
