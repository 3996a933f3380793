"""A round's life: starting it, moving a running round on when its jobs end, and closing its
review, each by its kind's :data:`~app.pipeline.stages.RULES`.

Every function here runs inside the caller's transaction with the pipeline row locked, so a
round's jobs, tasks, state changes and events commit together or not at all: a server that
dies halfway leaves the round as it was, and the next reconcile does the step again, once.
Task creation is idempotent per (kind, subject, source) besides (see ``review.create_tasks``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from app.logging import get_logger
from app.models import (
    Dataset,
    JobState,
    Pipeline,
    PipelineRound,
    RoundKind,
    RoundState,
    Stage,
    TaskState,
    User,
    utcnow,
)
from app.pipeline import repository
from app.pipeline.config import PipelineEnv
from app.pipeline.stages import RULES
from app.pipeline.stages.context import (
    RoundContext,
    StepParams,
    StepRefused,
    finish,
    round_context,
    round_source,
)
from app.pipeline.stages.detectors import cleanlab_failed
from app.pipeline.stages.embeddings import queue_embedding
from app.review.repository import tasks as task_repository

log = get_logger(__name__)

STAGE_ORDER = list(Stage)


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
        ctx = round_context(
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


def advance_running(ctx: RoundContext) -> bool:
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


def _start_embedded(ctx: RoundContext) -> None:
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


def review_open(ctx: RoundContext) -> bool:
    """Whether the round still has tasks waiting or leased."""
    counts = task_repository.task_state_counts(ctx.session, ctx.dataset.id, ctx.round.source)
    return any(counts.get(state, 0) for state in (TaskState.PENDING, TaskState.LEASED))


def close_review(ctx: RoundContext) -> None:
    handler = RULES[ctx.round.kind].review_done
    if handler is not None:
        handler(ctx)
    finish(ctx)
