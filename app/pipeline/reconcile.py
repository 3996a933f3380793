"""Moving pipelines on: applying new human decisions (:mod:`app.pipeline.verdicts`), finishing
rounds whose jobs ended or whose review queue emptied, and (auto mode) starting the next step.

:func:`reconcile_pipeline` does it for one pipeline in the caller's transaction, with the
pipeline's row locked (``FOR UPDATE``, skipping it when another process holds it): two server
processes never advance the same pipeline at once, and a step that fails halfway rolls back and
is done again by the next call. :class:`Reconciler` calls it for every pipeline every few
seconds, in a thread of each server process, so a round resumes after a restart.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.errors import AppError
from app.logging import get_logger
from app.models import (
    Dataset,
    Pipeline,
    RoundState,
    utcnow,
)
from app.pipeline import repository
from app.pipeline.config import PipelineEnv, parse_config
from app.pipeline.rules import (
    NextStep,
    RoundView,
    next_step,
)
from app.pipeline.stages import junk, lifecycle
from app.pipeline.stages.context import StepParams, finish, round_context
from app.pipeline.verdicts import sync_decisions

log = get_logger(__name__)

#: Auto mode: most steps started in one call (steps with nothing to do finish at once).
MAX_AUTO_STEPS = 8


@dataclass
class ReconcileResult:
    """What one call did."""

    decisions: int = 0
    samples_changed: int = 0
    classes_changed: int = 0
    rounds_advanced: list[str] = field(default_factory=list)
    rounds_started: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def changed(self) -> bool:
        return bool(
            self.samples_changed
            or self.classes_changed
            or self.rounds_advanced
            or self.rounds_started
        )


# --- rounds and auto mode -----------------------------------------------------------------------


def planned_step(session: Session, pipeline: Pipeline) -> NextStep | None:
    """What auto mode (and ``advance``) would start now: :func:`rules.next_step` on the
    pipeline's rounds and config."""
    config = parse_config(pipeline.config)
    return next_step(
        pipeline.stage,
        [
            RoundView(kind=r.kind, state=r.state, stats=dict(r.stats))
            for r in repository.list_rounds(session, pipeline.id)
        ],
        can_iterate=junk.can_iterate(session, pipeline.dataset_id, config),
        max_junk_iterations=config.max_junk_iterations,
        max_pullback_rounds=config.max_pullback_rounds,
        human_fraction=config.human_fraction,
        junk_min_found=config.junk_min_found,
    )


def advance_rounds(
    session: Session, pipeline: Pipeline, dataset: Dataset, *, env: PipelineEnv, now: datetime
) -> list[str]:
    """Moves every open round on where it can; returns the sources of those that moved. A step
    that breaks (bad results, a refused spec) fails its round with the reason."""
    moved = []
    for round_ in repository.list_rounds(session, pipeline.id):
        if not round_.state.is_open:
            continue
        ctx = round_context(
            session, pipeline=pipeline, dataset=dataset, round_=round_, env=env, now=now
        )
        try:
            with session.begin_nested():
                if round_.state is RoundState.RUNNING:
                    changed = lifecycle.advance_running(ctx)
                elif lifecycle.review_open(ctx):
                    changed = False
                else:
                    # A task is done in the same commit as its decision: every decision of the
                    # round is readable now, and is applied before the round ends (unless
                    # applying them asked for more: a class drop's next vote).
                    sync_decisions(session, pipeline, now=now)
                    changed = not lifecycle.review_open(ctx)
                    if changed:
                        lifecycle.close_review(ctx)
                session.flush()
        except (AppError, ValueError, KeyError) as error:
            message = error.message if isinstance(error, AppError) else repr(error)
            log.error("pipeline.round.broken", round=round_.source, error=message)
            round_ = repository.get_round(session, round_.id) or round_
            round_.error = message[-4000:]
            ctx.round = round_
            finish(ctx, RoundState.FAILED)
            changed = True
        if changed:
            moved.append(round_.source)
    return moved


def auto_steps(
    session: Session, pipeline: Pipeline, dataset: Dataset, *, env: PipelineEnv, now: datetime
) -> list[str]:
    """Auto mode: starts the next step while the loop has one (a step with nothing to do
    finishes at once, so the one after it starts too). A step that refuses turns auto mode
    off, with the reason in the pipeline's note."""
    started: list[str] = []
    for _ in range(MAX_AUTO_STEPS):
        step = planned_step(session, pipeline)
        if step is None:
            break
        pipeline.stage = step.stage
        if step.kind is None:
            pipeline.note = step.reason
            break
        try:
            round_ = lifecycle.start_round(
                session,
                pipeline=pipeline,
                dataset=dataset,
                kind=step.kind,
                params=StepParams(),
                env=env,
                user=None,
                request_key=None,
                now=now,
            )
        except AppError as error:
            pipeline.auto = False
            pipeline.note = f"auto mode stopped: {step.kind.value} refused: {error.message}"
            log.warning("pipeline.auto.stopped", dataset_id=dataset.id, reason=error.message)
            break
        pipeline.note = f"{round_.source}: {step.reason}"
        started.append(round_.source)
        if round_.state.is_open:
            break
    return started


def reconcile_pipeline(
    session: Session,
    *,
    env: PipelineEnv,
    pipeline_id: int,
    now: datetime | None = None,
    wait: bool = False,
    full: bool = False,
) -> ReconcileResult | None:
    """Applies new decisions, moves open rounds on and, in auto mode, starts the next step.
    None when another transaction holds the pipeline (unless ``wait``)."""
    now = now or utcnow()
    pipeline = repository.get_pipeline(
        session, pipeline_id=pipeline_id, for_update=True, skip_locked=not wait
    )
    if pipeline is None:
        return None
    dataset = session.get(Dataset, pipeline.dataset_id)
    assert dataset is not None
    result = ReconcileResult()
    result.decisions, result.samples_changed, result.classes_changed = sync_decisions(
        session, pipeline, now=now, full=full
    )
    result.rounds_advanced = advance_rounds(session, pipeline, dataset, env=env, now=now)
    if pipeline.auto:
        result.rounds_started = auto_steps(session, pipeline, dataset, env=env, now=now)
        # A step that finished at once may have been the last one of a stage.
        if result.rounds_started:
            result.rounds_advanced += advance_rounds(session, pipeline, dataset, env=env, now=now)
    result.note = pipeline.note
    if result.changed:
        log.info(
            "pipeline.reconciled",
            dataset_id=dataset.id,
            decisions=result.decisions,
            samples=result.samples_changed,
            advanced=result.rounds_advanced,
            started=result.rounds_started,
        )
    session.flush()
    return result


class Reconciler:
    """Reconciles every pipeline every ``interval`` seconds in a daemon thread, one
    transaction per pipeline; an error is logged and the next pipeline goes on."""

    def __init__(
        self, session_factory: sessionmaker[Session], *, env: PipelineEnv, interval: float
    ) -> None:
        self.session_factory = session_factory
        self.env = env
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pipeline-reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def run_once(self) -> dict[int, ReconcileResult | None]:
        with transaction(self.session_factory) as session:
            ids = repository.pipeline_ids(session)
        results: dict[int, ReconcileResult | None] = {}
        for pipeline_id in ids:
            if self._stop.is_set():
                break
            try:
                with transaction(self.session_factory) as session:
                    results[pipeline_id] = reconcile_pipeline(
                        session, env=self.env, pipeline_id=pipeline_id
                    )
            except Exception as error:  # one broken pipeline must not stop the others
                log.exception(
                    "pipeline.reconcile.failed", pipeline_id=pipeline_id, error=repr(error)
                )
                results[pipeline_id] = None
        return results

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception as error:  # e.g. the database is away: try again next time
                log.warning("pipeline.reconcile.unavailable", error=repr(error))
