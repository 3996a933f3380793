"""Moving pipelines on: applying new human decisions to sample states, finishing rounds whose
jobs ended or whose review queue emptied, and (auto mode) starting the next step.

:func:`reconcile_pipeline` does it for one pipeline in the caller's transaction, with the
pipeline's row locked (``FOR UPDATE``, skipping it when another process holds it): two server
processes never advance the same pipeline at once, and a step that fails halfway rolls back and
is done again by the next call. :class:`Reconciler` calls it for every pipeline every few
seconds, in a thread of each server process, so a round resumes after a restart.

Decisions are found by id above the pipeline's watermark (``decisions_seen_id``). A decision
younger than :data:`WATERMARK_GRACE` is looked at again on the next calls, as a concurrent
transaction may still commit a lower id; applying one again changes nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.errors import AppError
from app.logging import get_logger
from app.models import (
    ClassState,
    Dataset,
    EventKind,
    Pipeline,
    RoundState,
    SampleStatus,
    TaskKind,
    utcnow,
)
from app.pipeline import repository
from app.pipeline.config import PipelineEnv, parse_config
from app.pipeline.rules import (
    ClassOutcome,
    HumanVerdict,
    NextStep,
    RoundView,
    class_outcome,
    effective_verdict,
    next_step,
    resolve_status,
)
from app.pipeline.stages import junk, lifecycle
from app.pipeline.stages.context import JUNK_KINDS, StepParams, finish, human_of, round_context
from app.review import repository as review_repository
from app.review import service as review

log = get_logger(__name__)

WATERMARK_GRACE = timedelta(seconds=10)
#: Decisions read and applied at a time.
DECISION_BATCH = 20_000
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


# --- human decisions ----------------------------------------------------------------------------


def apply_sample_verdicts(
    session: Session, *, dataset_id: int, sample_ids: set[int], now: datetime
) -> int:
    """Sets the human verdict and status of these samples from their standing decisions;
    returns how many changed. Samples that now have a junk verdict lose their other waiting
    junk tasks (they are decided)."""
    if not sample_ids:
        return 0
    junk = review.current_verdicts(session, sample_ids=sample_ids, kinds=JUNK_KINDS)
    label = review.current_verdicts(session, sample_ids=sample_ids, kinds=[TaskKind.LABEL_CHECK])
    states = repository.sample_states(session, sample_ids)
    dropped = repository.dropped_class_ids(session, dataset_id)
    updates: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    decided: list[int] = []
    for sample_id, state in states.items():
        j, lab = junk.get(sample_id), label.get(sample_id)
        verdict = effective_verdict(
            HumanVerdict(j.decision_id, j.verdict, j.class_id) if j else None,
            HumanVerdict(lab.decision_id, lab.verdict, lab.class_id) if lab else None,
        )
        decision_id = verdict.decision_id if verdict else None
        if j is not None:
            decided.append(sample_id)
        if decision_id == state.decision_id:
            continue
        status, label_id = resolve_status(
            state.model_status, verdict, state.given_class_id, dropped
        )
        updates.append(
            {
                "sample_id": sample_id,
                "human_verdict": verdict.verdict if verdict else None,
                "decision_id": decision_id,
                "status": status,
                "label_class_id": label_id,
                "updated_at": now,
            }
        )
        current = j if j and j.decision_id == decision_id else lab
        detail = (
            f"{current.kind.value} {current.verdict.value} (task {current.task_id})"
            if verdict and current
            else "the human decision was undone"
        )
        events.append(
            repository.event_row(
                dataset_id,
                kind=EventKind.VERDICT if verdict else EventKind.WITHDRAWN,
                now=now,
                sample_id=sample_id,
                class_id=label_id,
                from_status=state.status,
                to_status=status,
                decision_id=decision_id or state.decision_id,
                detail=detail,
            )
        )
    repository.update_samples(session, updates)
    repository.insert_events(session, events)
    if decided:
        review_repository.cancel_pending_tasks(
            session, dataset_id, kinds=JUNK_KINDS, sample_ids=decided
        )
    return len(updates)


def apply_class_verdicts(
    session: Session, *, dataset_id: int, class_ids: set[int], required: int, now: datetime
) -> int:
    """Sets the state of these classes from their votes (standing class_check decisions, by
    :func:`~app.pipeline.rules.class_outcome`: ``required`` distinct people must say drop), and
    the status of their samples (a dropped class's samples leave the training set); returns
    how many classes changed. A drop still short of people asks someone else: a copy of the
    latest drop's task that its voter may not take (and the lease offers a class to nobody who
    voted on it). Votes made before a restore do not count."""
    if not class_ids:
        return 0
    votes = review_repository.class_votes(session, dataset_id, class_ids)
    rows = repository.pipeline_classes(session, dataset_id)
    busy = review_repository.open_class_tasks(session, dataset_id)
    changed: dict[int, ClassState] = {}
    events: list[dict[str, Any]] = []
    ask: dict[int, int] = {}
    for class_id in sorted(class_ids):
        row = rows.get(class_id)
        if row is None:
            continue
        counted = [v for v in votes.get(class_id, []) if v.decision_id > row.votes_after_id]
        outcome = class_outcome(counted, required=required)
        if outcome.ask is not None and class_id not in busy:
            ask[outcome.ask.task_id] = outcome.ask.user_id
        state = outcome.state
        if state is None:
            if row.restored_at is not None:
                state = ClassState.KEPT
            else:
                state = ClassState.REVIEW if class_id in busy else ClassState.ACTIVE
        decision_id = outcome.decision_id
        if state is row.state and decision_id == row.decision_id:
            continue
        was_dropped = row.state is ClassState.DROPPED
        row.state, row.decision_id = state, decision_id
        if was_dropped != (state is ClassState.DROPPED):
            changed[class_id] = state
        events.append(
            repository.event_row(
                dataset_id,
                kind=EventKind.CLASS_DROPPED
                if state is ClassState.DROPPED
                else EventKind.CLASS_KEPT,
                now=now,
                round_id=row.round_id,
                class_id=class_id,
                decision_id=decision_id,
                detail=_class_detail(state, outcome, required),
            )
        )
    session.flush()
    repository.insert_events(session, events)
    if ask:
        asked = review.queue_copies(session, excluding=ask)
        log.info(
            "pipeline.class.vote_asked", dataset_id=dataset_id, tasks=asked.task_ids, of=required
        )
    if changed:
        restatus_classes(session, dataset_id=dataset_id, class_ids=set(changed), now=now)
    return len(events)


def _class_detail(state: ClassState, outcome: ClassOutcome, required: int) -> str:
    if state is ClassState.DROPPED:
        said = f"{outcome.drops} annotators said drop"
        return f"class dropped: {said} (decision {outcome.decision_id})"
    if outcome.decision_id is not None:
        return f"class kept (decision {outcome.decision_id})"
    if outcome.drops:
        return f"class under review: {outcome.drops} of the {required} drops it needs"
    return f"class {state.value} (decision undone)"


def restatus_classes(
    session: Session, *, dataset_id: int, class_ids: set[int], now: datetime
) -> int:
    """Recomputes the status of the samples labelled with these classes (after a class was
    dropped or restored), with an event per sample whose status changed."""
    dropped = repository.dropped_class_ids(session, dataset_id)
    states = repository.states_where(session, dataset_id, label_class_ids=class_ids)
    updates: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for state in states:
        status, label = resolve_status(
            state.model_status, human_of(state), state.given_class_id, dropped
        )
        if status is state.status:
            continue
        updates.append({"sample_id": state.sample_id, "status": status, "updated_at": now})
        events.append(
            repository.event_row(
                dataset_id,
                kind=EventKind.CLASS_DROPPED
                if status is SampleStatus.DROPPED
                else EventKind.CLASS_KEPT,
                now=now,
                sample_id=state.sample_id,
                class_id=label,
                from_status=state.status,
                to_status=status,
                detail="its class was dropped"
                if status is SampleStatus.DROPPED
                else "its class was restored",
            )
        )
    repository.update_samples(session, updates)
    repository.insert_events(session, events)
    return len(updates)


def sync_decisions(
    session: Session, pipeline: Pipeline, *, now: datetime, full: bool = False
) -> tuple[int, int, int]:
    """Applies the review decisions made since the watermark (``full``: every decision ever
    made on the dataset), in batches. Returns (decisions read, samples changed, classes
    changed)."""
    dataset_id = pipeline.dataset_id
    required = parse_config(pipeline.config).class_drop_votes
    after = 0 if full else pipeline.decisions_seen_id
    read = samples = classes = 0
    settled: int | None = None
    young: int | None = None
    while True:
        rows = review_repository.decisions_after(session, dataset_id, after, limit=DECISION_BATCH)
        if not rows:
            break
        read += len(rows)
        sample_ids = {row.sample_id for row in rows if row.sample_id is not None}
        class_ids = {
            row.class_id
            for row in rows
            if row.kind is TaskKind.CLASS_CHECK and row.class_id is not None
        }
        samples += apply_sample_verdicts(
            session, dataset_id=dataset_id, sample_ids=sample_ids, now=now
        )
        classes += apply_class_verdicts(
            session, dataset_id=dataset_id, class_ids=class_ids, required=required, now=now
        )
        for row in rows:
            if row.created_at <= now - WATERMARK_GRACE:
                settled = max(settled or 0, row.id)
            elif young is None:
                young = row.id
        after = rows[-1].id
        if len(rows) < DECISION_BATCH:
            break
    if settled is not None:
        # Never past a young decision: the grace covers what commits out of order around it.
        limit = young - 1 if young is not None else settled
        pipeline.decisions_seen_id = max(pipeline.decisions_seen_id, min(settled, limit))
    return read, samples, classes


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
