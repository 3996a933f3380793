"""Applying human decisions to the pipeline: a sample's standing verdict sets its status, a
class's votes keep or drop it (and its samples leave or rejoin the training set).

:func:`sync_decisions` reads the decisions made since the pipeline's watermark
(``decisions_seen_id``), by id. A decision younger than :data:`WATERMARK_GRACE` is looked at
again on the next calls, as a concurrent transaction may still commit a lower id; applying one
again changes nothing. Every function here runs in the caller's transaction with the pipeline
row locked (see :mod:`app.pipeline.reconcile`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from app.logging import get_logger
from app.models import (
    ClassState,
    EventKind,
    Pipeline,
    PipelineClass,
    SampleStatus,
    TaskKind,
)
from app.pipeline import event_repository, sample_repository
from app.pipeline.config import parse_config
from app.pipeline.rules import (
    ClassOutcome,
    HumanVerdict,
    class_outcome,
    effective_verdict,
    resolve_status,
)
from app.pipeline.sample_repository import SampleState
from app.pipeline.stages.context import JUNK_KINDS, human_of
from app.review.records import CurrentVerdict
from app.review.repository import tasks as task_repository
from app.review.repository import verdicts as verdict_repository
from app.review.service import tasks as task_service
from app.review.service import verdicts as verdict_service

log = get_logger(__name__)

WATERMARK_GRACE = timedelta(seconds=10)
#: Decisions read and applied at a time.
DECISION_BATCH = 20_000


def apply_sample_verdicts(
    session: Session, *, dataset_id: int, sample_ids: set[int], now: datetime
) -> int:
    """Sets the human verdict and status of these samples from their standing decisions;
    returns how many changed. Samples that now have a junk verdict lose their other waiting
    junk tasks (they are decided)."""
    if not sample_ids:
        return 0
    junk = verdict_service.current_verdicts(session, sample_ids=sample_ids, kinds=JUNK_KINDS)
    label = verdict_service.current_verdicts(
        session, sample_ids=sample_ids, kinds=[TaskKind.LABEL_CHECK]
    )
    states = sample_repository.sample_states(session, sample_ids)
    dropped = sample_repository.dropped_class_ids(session, dataset_id)
    updates: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for sample_id, state in states.items():
        change = _sample_change(
            state, junk.get(sample_id), label.get(sample_id), dropped, dataset_id, now
        )
        if change is not None:
            updates.append(change[0])
            events.append(change[1])
    sample_repository.update_samples(session, updates)
    event_repository.insert_events(session, events)
    decided = [sample_id for sample_id in states if junk.get(sample_id) is not None]
    if decided:
        task_repository.cancel_pending_tasks(
            session, dataset_id, kinds=JUNK_KINDS, sample_ids=decided
        )
    return len(updates)


def _sample_change(
    state: SampleState,
    junk: CurrentVerdict | None,
    label: CurrentVerdict | None,
    dropped: set[int],
    dataset_id: int,
    now: datetime,
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The sample's new state row and its event under its standing junk and label verdicts;
    None when its standing decision is the one it already has."""
    verdict = effective_verdict(
        HumanVerdict(junk.decision_id, junk.verdict, junk.class_id) if junk else None,
        HumanVerdict(label.decision_id, label.verdict, label.class_id) if label else None,
    )
    decision_id = verdict.decision_id if verdict else None
    if decision_id == state.decision_id:
        return None
    status, label_id = resolve_status(state.model_status, verdict, state.given_class_id, dropped)
    update = {
        "sample_id": state.sample_id,
        "human_verdict": verdict.verdict if verdict else None,
        "decision_id": decision_id,
        "status": status,
        "label_class_id": label_id,
        "updated_at": now,
    }
    current = junk if junk and junk.decision_id == decision_id else label
    detail = (
        f"{current.kind.value} {current.verdict.value} (task {current.task_id})"
        if verdict and current
        else "the human decision was undone"
    )
    event = event_repository.event_row(
        dataset_id,
        kind=EventKind.VERDICT if verdict else EventKind.WITHDRAWN,
        now=now,
        sample_id=state.sample_id,
        class_id=label_id,
        from_status=state.status,
        to_status=status,
        decision_id=decision_id or state.decision_id,
        detail=detail,
    )
    return update, event


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
    votes = verdict_repository.class_votes(session, dataset_id, class_ids)
    rows = sample_repository.pipeline_classes(session, dataset_id)
    busy = task_repository.open_class_tasks(session, dataset_id)
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
        state = _class_state(outcome, row, busy=class_id in busy)
        decision_id = outcome.decision_id
        if state is row.state and decision_id == row.decision_id:
            continue
        was_dropped = row.state is ClassState.DROPPED
        row.state, row.decision_id = state, decision_id
        if was_dropped != (state is ClassState.DROPPED):
            changed[class_id] = state
        events.append(_class_event(dataset_id, row, outcome, required=required, now=now))
    session.flush()
    event_repository.insert_events(session, events)
    if ask:
        asked = task_service.queue_copies(session, excluding=ask)
        log.info(
            "pipeline.class.vote_asked", dataset_id=dataset_id, tasks=asked.task_ids, of=required
        )
    if changed:
        restatus_classes(session, dataset_id=dataset_id, class_ids=set(changed), now=now)
    return len(events)


def _class_state(outcome: ClassOutcome, row: PipelineClass, *, busy: bool) -> ClassState:
    """The class's state under its votes; with no outcome yet, kept after a restore, else
    under review while a task on it is open, else active."""
    if outcome.state is not None:
        return outcome.state
    if row.restored_at is not None:
        return ClassState.KEPT
    return ClassState.REVIEW if busy else ClassState.ACTIVE


def _class_event(
    dataset_id: int, row: PipelineClass, outcome: ClassOutcome, *, required: int, now: datetime
) -> dict[str, Any]:
    """The event of a class whose state or standing decision changed (``row`` already holds
    the new ones)."""
    return event_repository.event_row(
        dataset_id,
        kind=EventKind.CLASS_DROPPED if row.state is ClassState.DROPPED else EventKind.CLASS_KEPT,
        now=now,
        round_id=row.round_id,
        class_id=row.class_id,
        decision_id=row.decision_id,
        detail=_class_detail(row.state, outcome, required),
    )


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
    dropped = sample_repository.dropped_class_ids(session, dataset_id)
    states = sample_repository.states_where(session, dataset_id, label_class_ids=class_ids)
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
            event_repository.event_row(
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
    sample_repository.update_samples(session, updates)
    event_repository.insert_events(session, events)
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
        rows = verdict_repository.decisions_after(session, dataset_id, after, limit=DECISION_BATCH)
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
