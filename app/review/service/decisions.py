"""Deciding review tasks: a batch of verdicts recorded all or none under the caller's leases,
idempotent per key; and undo, which withdraws a decision and hands its task back.

Every function takes the session first and flushes, never commits: the caller's transaction
makes a batch atomic. Input is checked in full before anything is written.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.errors import Conflict, Forbidden, Invalid, NotFound
from app.logging import get_logger
from app.models import TaskKind, TaskState, User, Verdict, utcnow
from app.review.records import DecisionInput, DecisionRecord, UndoResult
from app.review.repository import decisions as decision_repository
from app.review.repository import leases as lease_repository
from app.review.repository import tasks as task_repository
from app.review.repository.tables import LockedTask
from app.review.service.leases import DEFAULT_LEASE, leased_tasks
from app.review.service.tasks import some_ids

log = get_logger(__name__)

#: Most decisions one request may carry.
MAX_DECISIONS = 200
MAX_KEY_LENGTH = 64
#: Time spent on one decision is capped at a day; anything above is a client bug.
MAX_SECONDS = 86_400.0


class TaskLeaseLost(Conflict):
    """The task was leased to another annotator after the caller's lease expired."""

    code = "lease_lost"


class AlreadyDecided(Conflict):
    code = "already_decided"


class TaskCancelled(Conflict):
    code = "task_cancelled"


class NotYourLease(Forbidden):
    code = "not_your_lease"


class AlreadyUndone(Conflict):
    code = "already_undone"


class KeyReused(Invalid):
    """An idempotency key sent again with a different decision."""

    code = "idempotency_key_reused"


def decide(
    session: Session,
    *,
    user: User,
    decisions: Sequence[DecisionInput],
    now: datetime | None = None,
) -> list[DecisionRecord]:
    """Records a batch of decisions atomically: all of them, or none and an error.

    A decision whose idempotency key this user already used for the same decision is not
    recorded again: the stored one is returned. The caller's lease must be current, or expired
    with nobody else having leased the task since; a task leased to someone else since answers
    TaskLeaseLost (409, with every such task id in ``details.task_ids``).
    """
    _check_batch(decisions)
    now = now or utcnow()
    tasks, stored = decision_repository.lock_tasks(
        session,
        {d.task_id for d in decisions},
        user_id=user.id,
        keys=[d.idempotency_key for d in decisions],
    )
    unknown = sorted({d.task_id for d in decisions} - set(tasks))
    if unknown:
        raise NotFound(f"no review tasks with ids {some_ids(unknown)}", task_ids=unknown)
    maybe_twin = [
        d.idempotency_key
        for d in decisions
        if d.idempotency_key not in stored and tasks[d.task_id].state is TaskState.DONE
    ]
    if maybe_twin:  # a twin of this request may have committed while we waited for the locks
        stored.update(decision_repository.decisions_by_key(session, user.id, maybe_twin))
    fresh = [d for d in decisions if d.idempotency_key not in stored]
    for decision in decisions:
        previous = stored.get(decision.idempotency_key)
        if previous is not None and not _same(previous, decision, tasks[decision.task_id]):
            raise KeyReused(
                f"idempotency key {decision.idempotency_key!r} was already used for another "
                "decision; send a new key for a new decision"
            )
    for decision in fresh:
        _check_verdict(decision, tasks[decision.task_id])
    _check_relabel_classes(session, fresh, tasks)
    _check_leases(fresh, tasks, user)
    inserted = _insert_decisions(
        session, [_decision_row(d, tasks[d.task_id], user, now) for d in fresh]
    )
    decision_repository.mark_done(session, [d.task_id for d in fresh], now)
    if inserted:
        log.info("review.decisions.recorded", user=user.username, n=len(inserted))
    by_key = {**stored, **{row.idempotency_key: row for row in inserted}}
    return [by_key[d.idempotency_key] for d in decisions]


def _check_batch(decisions: Sequence[DecisionInput]) -> None:
    if not decisions:
        raise Invalid("no decisions in the request")
    if len(decisions) > MAX_DECISIONS:
        raise Invalid(f"{len(decisions)} decisions in one request; send at most {MAX_DECISIONS}")
    tasks = Counter(d.task_id for d in decisions)
    twice = sorted(task_id for task_id, count in tasks.items() if count > 1)
    if twice:
        raise Invalid(f"tasks decided twice in one request: {some_ids(twice)}", task_ids=twice)
    keys = Counter(d.idempotency_key for d in decisions)
    if len(keys) != len(decisions):
        raise Invalid("two decisions in the request share an idempotency key")
    for decision in decisions:
        _check_key(decision.idempotency_key)
        _check_seconds(decision.seconds)
        if decision.verdict is Verdict.UNDO:
            raise Invalid("undo is not a verdict to send here: use the undo endpoint")


def _check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH:
        raise Invalid(f"idempotency keys have 1 to {MAX_KEY_LENGTH} characters")


def _check_seconds(seconds: float) -> None:
    if not math.isfinite(seconds) or not 0.0 <= seconds <= MAX_SECONDS:
        raise Invalid(f"seconds must be between 0 and {MAX_SECONDS:.0f}")


def _check_verdict(decision: DecisionInput, task: LockedTask) -> None:
    if decision.verdict not in task.kind.verdicts:
        allowed = ", ".join(sorted(v.value for v in task.kind.verdicts))
        raise Invalid(
            f"task {task.id} is a {task.kind.value} task: its verdict is one of {allowed}, "
            f"not {decision.verdict.value}",
            task_id=task.id,
        )
    if decision.verdict is Verdict.RELABEL and decision.class_id is None:
        raise Invalid(f"task {task.id}: a relabel needs the new class_id", task_id=task.id)
    if decision.verdict is not Verdict.RELABEL and decision.class_id is not None:
        raise Invalid(
            f"task {task.id}: class_id goes only with a relabel, not {decision.verdict.value}",
            task_id=task.id,
        )
    if decision.verdict is Verdict.RELABEL and decision.class_id == task.given_class_id:
        raise Invalid(
            f"task {task.id}: class {decision.class_id} is the given class; send accept",
            task_id=task.id,
        )


def _check_relabel_classes(
    session: Session, decisions: Sequence[DecisionInput], tasks: dict[int, LockedTask]
) -> None:
    wanted: dict[int, set[int]] = {}
    for decision in decisions:
        if decision.class_id is not None:
            wanted.setdefault(tasks[decision.task_id].dataset_id, set()).add(decision.class_id)
    for dataset_id, class_ids in wanted.items():
        unknown = sorted(
            class_ids - task_repository.existing_class_ids(session, dataset_id, class_ids)
        )
        if unknown:
            raise Invalid(
                f"class ids not in the task's dataset: {some_ids(unknown)}", class_ids=unknown
            )


def _check_leases(
    decisions: Sequence[DecisionInput], tasks: dict[int, LockedTask], user: User
) -> None:
    lost: list[int] = []
    for decision in decisions:
        task = tasks[decision.task_id]
        if task.state is TaskState.CANCELLED:
            raise TaskCancelled(f"task {task.id} was cancelled", task_id=task.id)
        if task.state is TaskState.DONE:
            raise AlreadyDecided(f"task {task.id} is already decided", task_id=task.id)
        if task.lease_owner_id == user.id:
            continue  # a live lease, or an expired one nobody took since
        if decision.lease_version < task.lease_version:
            lost.append(task.id)
        else:
            raise NotYourLease(
                f"task {task.id} is not leased to you: lease it first", task_id=task.id
            )
    if lost:
        raise TaskLeaseLost(
            f"your lease on {len(lost)} task(s) expired and they went to another annotator; "
            "your decision on them was not recorded",
            task_ids=lost,
        )


def _same(previous: DecisionRecord, decision: DecisionInput, task: LockedTask) -> bool:
    """Whether a stored decision is the one being sent again."""
    if previous.task_id != decision.task_id or previous.verdict is not decision.verdict:
        return False
    return decision.verdict is not Verdict.RELABEL or previous.class_id == decision.class_id


def _decision_row(
    decision: DecisionInput, task: LockedTask, user: User, now: datetime
) -> dict[str, Any]:
    if task.kind is TaskKind.CLASS_CHECK:
        class_id = task.class_id
    elif decision.verdict is Verdict.RELABEL:
        class_id = decision.class_id
    elif decision.verdict is Verdict.ACCEPT:
        class_id = task.given_class_id
    else:
        class_id = None
    return _row(
        task,
        user=user,
        verdict=decision.verdict,
        class_id=class_id,
        seconds=decision.seconds,
        idempotency_key=decision.idempotency_key,
        lease_version=decision.lease_version,
        now=now,
    )


def _row(
    task: LockedTask,
    *,
    user: User,
    verdict: Verdict,
    class_id: int | None,
    seconds: float,
    idempotency_key: str,
    lease_version: int,
    now: datetime,
    supersedes_id: int | None = None,
) -> dict[str, Any]:
    """A decision's columns: ``class_id`` is the class it confirms (or drops), if any."""
    return {
        "task_id": task.id,
        "dataset_id": task.dataset_id,
        "kind": task.kind,
        "sample_id": task.sample_id,
        "class_id": class_id,
        "user_id": user.id,
        "verdict": verdict,
        "seconds": float(seconds),
        "idempotency_key": idempotency_key,
        "lease_version": lease_version,
        "supersedes_id": supersedes_id,
        "created_at": now,
    }


def _insert_decisions(session: Session, rows: Sequence[dict[str, Any]]) -> list[DecisionRecord]:
    """Inserts decisions. The one unique key a new decision can break is (user, idempotency
    key): the key was already used on another task."""
    try:
        return decision_repository.insert_decisions(session, rows)
    except IntegrityError as exc:
        raise KeyReused(
            "an idempotency key of this request was already used for another decision; "
            "send a new key for a new decision"
        ) from exc


# --- undo ---------------------------------------------------------------------------------------


def undo(
    session: Session,
    *,
    user: User,
    decision_id: int,
    idempotency_key: str,
    seconds: float = 0.0,
    now: datetime | None = None,
    lease_for: timedelta = DEFAULT_LEASE,
) -> UndoResult:
    """Withdraws one of the user's own decisions: appends an ``undo`` decision that supersedes
    it and leases the task to the user again (new lease version), to decide afresh.

    Only the task's standing decision can be undone. Sending the same key again returns the
    same undo and the task as it is now.
    """
    _check_key(idempotency_key)
    _check_seconds(seconds)
    now = now or utcnow()
    target = decision_repository.get_decision(session, decision_id)
    if target is None:
        raise NotFound(f"no decision with id {decision_id}")
    tasks, _ = decision_repository.lock_tasks(session, [target.task_id], user_id=user.id, keys=[])
    task = tasks[target.task_id]
    previous = decision_repository.decisions_by_key(session, user.id, [idempotency_key])
    if idempotency_key in previous:
        return _undo_sent_again(session, previous[idempotency_key], target=target)
    _check_undoable(session, target, task, user)
    undo_row = _row(
        task,
        user=user,
        verdict=Verdict.UNDO,
        class_id=target.class_id,
        seconds=seconds,
        idempotency_key=idempotency_key,
        lease_version=task.lease_version,
        now=now,
        supersedes_id=decision_id,
    )
    try:
        [row] = decision_repository.insert_decisions(session, [undo_row])
    except IntegrityError as exc:  # a concurrent undo of the same decision won
        raise AlreadyUndone(f"decision {decision_id} was already undone") from exc
    reopened = lease_repository.reopen_task(
        session, task_id=task.id, user_id=user.id, expires_at=now + lease_for
    )
    log.info("review.decision.undone", user=user.username, decision_id=decision_id)
    return UndoResult(decision=row, task=leased_tasks([reopened])[0])


def _undo_sent_again(
    session: Session, previous: DecisionRecord, *, target: DecisionRecord
) -> UndoResult:
    """The stored undo made with the same key, and the task as it is now; or KeyReused when
    the key went to another decision."""
    if previous.verdict is not Verdict.UNDO or previous.supersedes_id != target.id:
        raise KeyReused(
            f"idempotency key {previous.idempotency_key!r} was already used for another decision"
        )
    task = leased_tasks([lease_repository.task_row(session, target.task_id)])[0]
    return UndoResult(decision=previous, task=task)


def _check_undoable(session: Session, target: DecisionRecord, task: LockedTask, user: User) -> None:
    """Only the user's own standing decision on the task can be undone, and not an undo."""
    if target.user_id != user.id:
        raise Forbidden("you can only undo your own decisions")
    if target.verdict is Verdict.UNDO:
        raise Invalid("an undo cannot be undone; decide the task again instead")
    if decision_repository.superseding_decision(session, target.id) is not None:
        raise AlreadyUndone(f"decision {target.id} was already undone")
    if (
        task.state is not TaskState.DONE
        or decision_repository.current_decision_of_task(session, task.id) != target.id
    ):
        raise Conflict(f"decision {target.id} no longer stands for task {task.id}; nothing to undo")
