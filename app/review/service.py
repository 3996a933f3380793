"""The review queue's rules: queueing tasks, leases, decisions, undo, verdicts and statistics.

Every function takes the session first and flushes, never commits: the caller's transaction
makes a lease or a batch of decisions atomic. Input is checked in full before anything is
written, so a refused request leaves no trace.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.errors import Conflict, Forbidden, Invalid, NotFound
from app.logging import get_logger
from app.models import Dataset, TaskKind, TaskState, User, Verdict, utcnow
from app.review import repository
from app.review.repository import DecisionRow, LockedTask, TaskRow
from app.review.schemas import (
    Agreement,
    AnnotatorStats,
    CreatedTasks,
    CurrentVerdict,
    DecisionInput,
    DecisionRecord,
    HistoryEntry,
    HourCount,
    LeasedTask,
    LeaseRenewal,
    Progress,
    QueueCount,
    QueueStats,
    ReferenceSet,
    ReviewBatch,
    Suggestion,
    TaskItem,
    UndoResult,
)

log = get_logger(__name__)

DEFAULT_LEASE = timedelta(minutes=10)
#: Most tasks one lease may take, and most decisions one request may carry.
MAX_LEASE = 200
MAX_DECISIONS = 200
#: Most task ids a lease request may name as already held.
MAX_EXCLUDE = 1_000
#: Most tasks one API request may queue (the service itself takes any number).
MAX_API_ITEMS = 10_000
MAX_SUGGESTIONS = 10
MAX_KEY_LENGTH = 64
MAX_SOURCE_LENGTH = 100
#: Time spent on one decision is capped at a day; anything above is a client bug.
MAX_SECONDS = 86_400.0


class LeaseLost(Conflict):
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


# --- creating tasks -----------------------------------------------------------------------------


def get_dataset(session: Session, dataset_id: int) -> Dataset:
    dataset = repository.get_dataset(session, dataset_id)
    if dataset is None:
        raise NotFound(f"no dataset with id {dataset_id}")
    return dataset


def get_dataset_by_name(session: Session, name: str) -> Dataset:
    dataset = repository.get_dataset_by_name(session, name)
    if dataset is None:
        raise NotFound(f"no dataset named {name!r}")
    return dataset


def create_tasks(
    session: Session,
    *,
    dataset: Dataset,
    kind: TaskKind,
    items: Sequence[TaskItem],
    source: str,
    reason: str = "",
    created_by: User | None = None,
    max_items: int | None = None,
) -> CreatedTasks:
    """Queues one task per item. Idempotent per (kind, subject, source): an item already queued
    from the same source is skipped, so a retried round queues nothing twice.

    Sample kinds need ``sample_id`` (a sample of ``dataset``); class_check needs ``class_id``
    (a class of ``dataset``). Only label_check takes ``suggestions``, at most ten, with class
    ids of the dataset and probabilities in [0, 1].
    """
    source = _check_source(source)
    _check_items(items, kind=kind, max_items=max_items)
    _check_subjects_exist(session, dataset, kind, items)
    now = utcnow()
    rows = [
        {
            "dataset_id": dataset.id,
            "kind": kind,
            "sample_id": item.sample_id,
            "class_id": item.class_id,
            "priority": float(item.priority),
            "score": item.score,
            "source": source,
            "reason": item.reason if item.reason is not None else reason,
            "suggestions": (
                [[s.class_id, s.probability] for s in item.suggestions]
                if item.suggestions
                else None
            ),
            "state": TaskState.PENDING,
            "lease_version": 0,
            "created_by_id": created_by.id if created_by else None,
            "created_at": now,
        }
        for item in items
    ]
    ids = repository.insert_tasks(session, rows)
    log.info(
        "review.tasks.created",
        dataset_id=dataset.id,
        kind=kind.value,
        source=source,
        created=len(ids),
        skipped=len(items) - len(ids),
    )
    return CreatedTasks(created=len(ids), skipped=len(items) - len(ids), task_ids=ids)


def _check_source(source: str) -> str:
    source = source.strip()
    if not source:
        raise Invalid("source must name the round or model that queues the tasks")
    if len(source) > MAX_SOURCE_LENGTH:
        raise Invalid(f"source is longer than {MAX_SOURCE_LENGTH} characters")
    return source


def _check_items(items: Sequence[TaskItem], *, kind: TaskKind, max_items: int | None) -> None:
    if not items:
        raise Invalid("no tasks to create: items is empty")
    if max_items is not None and len(items) > max_items:
        raise Invalid(f"{len(items)} items in one request; send at most {max_items} at a time")
    seen: set[int] = set()
    for index, item in enumerate(items):
        subject = item.class_id if kind.is_about_a_class else item.sample_id
        other = item.sample_id if kind.is_about_a_class else item.class_id
        wanted, unwanted = (
            ("class_id", "sample_id")
            if kind.is_about_a_class
            else (
                "sample_id",
                "class_id",
            )
        )
        if subject is None or other is not None:
            raise Invalid(
                f"item {index}: a {kind.value} task needs {wanted} and no {unwanted}", item=index
            )
        if subject in seen:
            raise Invalid(f"item {index}: {wanted} {subject} appears twice", item=index)
        seen.add(subject)
        if not math.isfinite(item.priority) or (
            item.score is not None and not math.isfinite(item.score)
        ):
            raise Invalid(f"item {index}: priority and score must be finite numbers", item=index)
        if item.suggestions and kind is not TaskKind.LABEL_CHECK:
            raise Invalid(f"item {index}: only label_check tasks take suggestions", item=index)
        if len(item.suggestions) > MAX_SUGGESTIONS:
            raise Invalid(f"item {index}: at most {MAX_SUGGESTIONS} suggestions", item=index)
        for suggestion in item.suggestions:
            if not 0.0 <= suggestion.probability <= 1.0:
                raise Invalid(
                    f"item {index}: suggestion probabilities must lie in [0, 1]", item=index
                )
        if len({s.class_id for s in item.suggestions}) != len(item.suggestions):
            raise Invalid(f"item {index}: a class is suggested twice", item=index)


def _check_subjects_exist(
    session: Session, dataset: Dataset, kind: TaskKind, items: Sequence[TaskItem]
) -> None:
    if kind.is_about_a_class:
        wanted = {item.class_id for item in items if item.class_id is not None}
        missing = sorted(wanted - repository.existing_class_ids(session, dataset.id, wanted))
        if missing:
            raise Invalid(
                f"{len(missing)} class ids are not classes of dataset {dataset.name!r}: "
                f"{_some(missing)}",
                class_ids=missing[:100],
            )
    else:
        wanted = {item.sample_id for item in items if item.sample_id is not None}
        missing = sorted(wanted - repository.existing_sample_ids(session, dataset.id, wanted))
        if missing:
            raise Invalid(
                f"{len(missing)} sample ids are not samples of dataset {dataset.name!r}: "
                f"{_some(missing)}",
                sample_ids=missing[:100],
            )
    suggested = {s.class_id for item in items for s in item.suggestions}
    if suggested:
        unknown = sorted(suggested - repository.existing_class_ids(session, dataset.id, suggested))
        if unknown:
            raise Invalid(
                f"suggested class ids not in dataset {dataset.name!r}: {_some(unknown)}",
                class_ids=unknown[:100],
            )


def _some(ids: Sequence[int], shown: int = 10) -> str:
    text = ", ".join(str(i) for i in ids[:shown])
    return text + (f" … ({len(ids) - shown} more)" if len(ids) > shown else "")


def create_audit(
    session: Session,
    *,
    dataset: Dataset,
    n: int,
    seed: int | None = None,
    source: str | None = None,
    created_by: User | None = None,
) -> tuple[CreatedTasks, int, str]:
    """Queues junk_audit tasks for ``n`` usable samples drawn at random (seeded) from those not
    currently judged junk by a human. The same seed draws the same samples, and the default
    source names the seed, so repeating a command queues nothing new.
    Returns the result, the seed and the source."""
    if n < 1:
        raise Invalid("n must be at least 1")
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    source = source or f"audit seed {seed}"
    junk = {
        row.sample_id
        for row in repository.current_decisions(session, dataset_id=dataset.id)
        if row.verdict is Verdict.JUNK and row.sample_id is not None
    }
    pool = [
        sample_id
        for sample_id in repository.usable_sample_ids(session, dataset.id)
        if sample_id not in junk
    ]
    if not pool:
        raise Invalid(f"dataset {dataset.name!r} has no usable samples to audit")
    chosen = random.Random(seed).sample(pool, min(n, len(pool)))
    items = [TaskItem(sample_id=sample_id) for sample_id in sorted(chosen)]
    created = create_tasks(
        session,
        dataset=dataset,
        kind=TaskKind.JUNK_AUDIT,
        items=items,
        source=source,
        reason="random audit of samples believed clean",
        created_by=created_by,
    )
    return created, seed, source


def request_second_opinions(
    session: Session,
    *,
    dataset: Dataset,
    kind: TaskKind,
    fraction: float,
    seed: int | None = None,
    created_by: User | None = None,
) -> CreatedTasks:
    """Queues a copy of a random ``fraction`` of the decided tasks of this kind, for anyone but
    the annotator who decided the original. Each task gets at most one second opinion."""
    if not 0.0 < fraction <= 1.0:
        raise Invalid("fraction must be in (0, 1]")
    candidates = repository.done_tasks_without_second_opinion(session, dataset.id, kind)
    if not candidates:
        return CreatedTasks(created=0, skipped=0)
    count = max(1, round(fraction * len(candidates)))
    chosen = random.Random(seed).sample(candidates, count)
    created = queue_copies(session, excluding=dict(chosen), created_by=created_by)
    log.info(
        "review.second_opinions.created", dataset_id=dataset.id, kind=kind.value, n=created.created
    )
    return created


def queue_copies(
    session: Session, *, excluding: Mapping[int, int], created_by: User | None = None
) -> CreatedTasks:
    """Queues a copy of each decided task in ``excluding`` (task id → the user who may not
    take the copy: the one who decided it), to ask someone else the same question. A task is
    copied at most once: asking again queues nothing."""
    now = utcnow()
    rows = [
        {
            **{name: value for name, value in copy.items() if name != "id"},
            "origin_task_id": copy["id"],
            "exclude_user_id": excluding[copy["id"]],
            "state": TaskState.PENDING,
            "lease_version": 0,
            "created_by_id": created_by.id if created_by else None,
            "created_at": now,
        }
        for copy in repository.task_copies(session, list(excluding))
    ]
    ids = repository.insert_tasks(session, rows)
    return CreatedTasks(created=len(ids), skipped=len(rows) - len(ids), task_ids=ids)


# --- leasing ------------------------------------------------------------------------------------


def lease_tasks(
    session: Session,
    *,
    user: User,
    kind: TaskKind,
    dataset_id: int | None = None,
    n: int = 1,
    exclude: Collection[int] = (),
    now: datetime | None = None,
    lease_for: timedelta = DEFAULT_LEASE,
) -> list[LeasedTask]:
    """Leases up to ``n`` tasks of a queue to ``user`` until ``now + lease_for``.

    The user's own live leases of the queue come first (renewed), except those in ``exclude``
    (what the caller already shows), then pending tasks by priority. Expired leases are
    returned to the queue on the way (on PostgreSQL they can be taken from the next lease on).
    An empty list means the queue is empty for this user.
    """
    if not 1 <= n <= MAX_LEASE:
        raise Invalid(f"n must be between 1 and {MAX_LEASE}")
    if len(exclude) > MAX_EXCLUDE:
        raise Invalid(f"exclude names more than {MAX_EXCLUDE} tasks")
    now = now or utcnow()
    rows = repository.lease(
        session,
        user_id=user.id,
        kind=kind,
        dataset_id=dataset_id,
        exclude=exclude,
        n=n,
        now=now,
        expires_at=now + lease_for,
    )
    if not rows and dataset_id is not None and repository.get_dataset(session, dataset_id) is None:
        raise NotFound(f"no dataset with id {dataset_id}")
    return _leased(rows)


def renew_leases(
    session: Session,
    *,
    user: User,
    task_ids: Collection[int],
    lease_for: timedelta,
    now: datetime | None = None,
) -> LeaseRenewal:
    """A page's heartbeat: extends the user's leases on ``task_ids`` to ``now + lease_for``.

    A lease that lapsed (the page was hidden, or slept) is taken back as long as nobody else
    leased the task since; the others are ``lost``. The lease version does not change, so the
    decisions the page makes under it stay valid.
    """
    _check_held(task_ids)
    now = now or utcnow()
    expires_at = now + lease_for
    wanted = set(task_ids)
    renewed = set(
        repository.renew_leases(session, user_id=user.id, task_ids=wanted, expires_at=expires_at)
    )
    return LeaseRenewal(
        renewed=sorted(renewed), lost=sorted(wanted - renewed), lease_expires_at=expires_at
    )


def release_leases(
    session: Session, *, user: User, task_ids: Collection[int], now: datetime | None = None
) -> list[int]:
    """Gives back the user's live leases on ``task_ids`` (a page hidden, closed or done with
    them): others may lease those tasks at once. Until someone does, the user's decision on
    one is still taken and a renewal takes it back. Returns the ids released; releasing
    again releases nothing."""
    _check_held(task_ids)
    released = repository.release_leases(
        session, user_id=user.id, task_ids=set(task_ids), now=now or utcnow()
    )
    if released:
        log.info("review.leases.released", user=user.username, n=len(released))
    return sorted(released)


def _check_held(task_ids: Collection[int]) -> None:
    if len(task_ids) > MAX_EXCLUDE:
        raise Invalid(f"name at most {MAX_EXCLUDE} tasks at a time")


def _leased(rows: Sequence[TaskRow]) -> list[LeasedTask]:
    ordered = sorted(rows, key=lambda row: (-row.priority, -row.id))
    return [_leased_task(row) for row in ordered]


def _leased_task(row: TaskRow) -> LeasedTask:
    assert row.lease_expires_at is not None
    return LeasedTask(
        id=row.id,
        dataset_id=row.dataset_id,
        kind=row.kind,
        sample_id=row.sample_id,
        class_id=row.class_id,
        given_class_id=row.given_class_id,
        priority=row.priority,
        score=row.score,
        source=row.source,
        reason=row.reason,
        suggestions=tuple(
            Suggestion(class_id=int(class_id), probability=float(p))
            for class_id, p in (row.suggestions or [])
        ),
        lease_version=row.lease_version,
        lease_expires_at=row.lease_expires_at,
    )


# --- deciding -----------------------------------------------------------------------------------


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
    LeaseLost (409, with every such task id in ``details.task_ids``).
    """
    _check_batch(decisions)
    now = now or utcnow()
    tasks, stored = repository.lock_tasks(
        session,
        {d.task_id for d in decisions},
        user_id=user.id,
        keys=[d.idempotency_key for d in decisions],
    )
    unknown = sorted({d.task_id for d in decisions} - set(tasks))
    if unknown:
        raise NotFound(f"no review tasks with ids {_some(unknown)}", task_ids=unknown)
    maybe_twin = [
        d.idempotency_key
        for d in decisions
        if d.idempotency_key not in stored and tasks[d.task_id].state is TaskState.DONE
    ]
    if maybe_twin:  # a twin of this request may have committed while we waited for the locks
        stored.update(repository.decisions_by_key(session, user.id, maybe_twin))
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
    repository.mark_done(session, [d.task_id for d in fresh], now)
    if inserted:
        log.info("review.decisions.recorded", user=user.username, n=len(inserted))
    by_key = {**stored, **{row.idempotency_key: row for row in inserted}}
    return [_record(by_key[d.idempotency_key]) for d in decisions]


def _check_batch(decisions: Sequence[DecisionInput]) -> None:
    if not decisions:
        raise Invalid("no decisions in the request")
    if len(decisions) > MAX_DECISIONS:
        raise Invalid(f"{len(decisions)} decisions in one request; send at most {MAX_DECISIONS}")
    tasks = Counter(d.task_id for d in decisions)
    twice = sorted(task_id for task_id, count in tasks.items() if count > 1)
    if twice:
        raise Invalid(f"tasks decided twice in one request: {_some(twice)}", task_ids=twice)
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
        unknown = sorted(class_ids - repository.existing_class_ids(session, dataset_id, class_ids))
        if unknown:
            raise Invalid(
                f"class ids not in the task's dataset: {_some(unknown)}", class_ids=unknown
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
        raise LeaseLost(
            f"your lease on {len(lost)} task(s) expired and they went to another annotator; "
            "your decision on them was not recorded",
            task_ids=lost,
        )


def _same(previous: DecisionRow, decision: DecisionInput, task: LockedTask) -> bool:
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
    return {
        "task_id": task.id,
        "dataset_id": task.dataset_id,
        "kind": task.kind,
        "sample_id": task.sample_id,
        "class_id": class_id,
        "user_id": user.id,
        "verdict": decision.verdict,
        "seconds": float(decision.seconds),
        "idempotency_key": decision.idempotency_key,
        "lease_version": decision.lease_version,
        "supersedes_id": None,
        "created_at": now,
    }


def _insert_decisions(session: Session, rows: Sequence[dict[str, Any]]) -> list[DecisionRow]:
    """Inserts decisions. The one unique key a new decision can break is (user, idempotency
    key): the key was already used on another task."""
    try:
        return repository.insert_decisions(session, rows)
    except IntegrityError as exc:
        raise KeyReused(
            "an idempotency key of this request was already used for another decision; "
            "send a new key for a new decision"
        ) from exc


def _record(row: DecisionRow) -> DecisionRecord:
    return DecisionRecord(
        id=row.id,
        task_id=row.task_id,
        kind=row.kind,
        sample_id=row.sample_id,
        class_id=row.class_id,
        user_id=row.user_id,
        verdict=row.verdict,
        seconds=row.seconds,
        idempotency_key=row.idempotency_key,
        supersedes_id=row.supersedes_id,
        created_at=row.created_at,
    )


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
    target = repository.get_decision(session, decision_id)
    if target is None:
        raise NotFound(f"no decision with id {decision_id}")
    tasks, _ = repository.lock_tasks(session, [target.task_id], user_id=user.id, keys=[])
    task = tasks[target.task_id]
    previous = repository.decisions_by_key(session, user.id, [idempotency_key]).get(idempotency_key)
    if previous is not None:
        if previous.verdict is not Verdict.UNDO or previous.supersedes_id != decision_id:
            raise KeyReused(
                f"idempotency key {idempotency_key!r} was already used for another decision"
            )
        return UndoResult(decision=_record(previous), task=_task_now(session, task.id))
    if target.user_id != user.id:
        raise Forbidden("you can only undo your own decisions")
    if target.verdict is Verdict.UNDO:
        raise Invalid("an undo cannot be undone; decide the task again instead")
    if repository.superseding_decision(session, decision_id) is not None:
        raise AlreadyUndone(f"decision {decision_id} was already undone")
    if (
        task.state is not TaskState.DONE
        or repository.current_decision_of_task(session, task.id) != decision_id
    ):
        raise Conflict(
            f"decision {decision_id} no longer stands for task {task.id}; nothing to undo"
        )
    undo_row = [
        {
            "task_id": task.id,
            "dataset_id": task.dataset_id,
            "kind": task.kind,
            "sample_id": task.sample_id,
            "class_id": target.class_id,
            "user_id": user.id,
            "verdict": Verdict.UNDO,
            "seconds": float(seconds),
            "idempotency_key": idempotency_key,
            "lease_version": task.lease_version,
            "supersedes_id": decision_id,
            "created_at": now,
        }
    ]
    try:
        [row] = repository.insert_decisions(session, undo_row)
    except IntegrityError as exc:  # a concurrent undo of the same decision won
        raise AlreadyUndone(f"decision {decision_id} was already undone") from exc
    reopened = repository.reopen_task(
        session, task_id=task.id, user_id=user.id, expires_at=now + lease_for
    )
    log.info("review.decision.undone", user=user.username, decision_id=decision_id)
    return UndoResult(decision=_record(row), task=_leased([reopened])[0])


def _task_now(session: Session, task_id: int) -> LeasedTask:
    return _leased([repository.task_row(session, task_id)])[0]


# --- verdicts -----------------------------------------------------------------------------------


def current_verdicts(
    session: Session,
    *,
    dataset_id: int | None = None,
    sample_ids: Collection[int] | None = None,
    kinds: Collection[TaskKind] | None = None,
) -> dict[int, CurrentVerdict]:
    """Each reviewed sample's current human verdict, by sample id: its latest decision (among
    ``kinds`` when given) that no undo withdrew. Samples without one are absent."""
    rows = repository.current_decisions(
        session, dataset_id=dataset_id, sample_ids=sample_ids, kinds=kinds
    )
    return {
        row.sample_id: CurrentVerdict(
            sample_id=row.sample_id,
            decision_id=row.id,
            task_id=row.task_id,
            kind=row.kind,
            verdict=row.verdict,
            class_id=row.class_id,
            user_id=row.user_id,
            created_at=row.created_at,
        )
        for row in rows
        if row.sample_id is not None
    }


def sample_history(session: Session, sample_id: int) -> list[HistoryEntry]:
    """Every decision on the sample, oldest first, undo rows included."""
    return [
        HistoryEntry(
            decision_id=row.id,
            task_id=row.task_id,
            kind=row.kind,
            verdict=row.verdict,
            class_id=row.class_id,
            username=entry.username,
            seconds=row.seconds,
            source=entry.source,
            reason=entry.reason,
            score=entry.score,
            supersedes_id=row.supersedes_id,
            withdrawn=entry.withdrawn,
            created_at=row.created_at,
        )
        for entry in repository.sample_history(session, sample_id)
        for row in [entry.decision]
    ]


# --- statistics ---------------------------------------------------------------------------------


def queue_counts(
    session: Session, *, dataset_id: int | None = None, now: datetime | None = None
) -> list[QueueCount]:
    """Every queue's tasks by state, per dataset and kind; an expired lease counts as pending."""
    now = now or utcnow()
    table: dict[tuple[int, str, TaskKind], Counter[str]] = {}
    for ds, name, kind, state, expired, count in repository.queue_counts(
        session, now, dataset_id=dataset_id
    ):
        bucket = TaskState.PENDING if expired else state
        table.setdefault((ds, name, kind), Counter())[bucket.value] += count
    return [
        QueueCount(
            dataset_id=ds,
            dataset_name=name,
            kind=kind,
            pending=counts[TaskState.PENDING.value],
            leased=counts[TaskState.LEASED.value],
            done=counts[TaskState.DONE.value],
            cancelled=counts[TaskState.CANCELLED.value],
        )
        for (ds, name, kind), counts in sorted(table.items(), key=lambda item: item[0][1:])
    ]


def open_queues(session: Session, *, now: datetime | None = None) -> list[QueueCount]:
    """Queues with tasks left to do (available or leased); only pending and leased counted."""
    now = now or utcnow()
    return [
        QueueCount(
            dataset_id=ds,
            dataset_name=name,
            kind=kind,
            pending=available,
            leased=leased,
            done=0,
            cancelled=0,
        )
        for ds, name, kind, available, leased in repository.open_counts(session, now)
    ]


def remaining(
    session: Session,
    *,
    user: User,
    kind: TaskKind,
    dataset_id: int,
    cap: int = 10_000,
    now: datetime | None = None,
) -> int:
    """Tasks of the queue waiting for anyone (that ``user`` may be handed), counted up to
    ``cap``."""
    return repository.available_count(
        session, kind=kind, dataset_id=dataset_id, user_id=user.id, now=now or utcnow(), cap=cap
    )


def queue_stats(
    session: Session,
    *,
    dataset_id: int | None = None,
    hours: int = 24,
    now: datetime | None = None,
) -> QueueStats:
    """Counts per queue; per annotator their decisions per hour over the last ``hours`` and
    median seconds per decision; agreement on tasks decided twice (second opinions)."""
    if not 1 <= hours <= 24 * 90:
        raise Invalid("hours must be between 1 and 2160")
    now = now or utcnow()
    since = now - timedelta(hours=hours)
    by_hour: dict[int, list[HourCount]] = {}
    for user_id, hour, count in repository.decisions_by_user_hour(
        session, since, dataset_id=dataset_id
    ):
        by_hour.setdefault(user_id, []).append(HourCount(hour=_as_hour(hour), decisions=count))
    medians = repository.median_seconds(session, since, dataset_id=dataset_id, per_user=True)
    overall = repository.median_seconds(session, since, dataset_id=dataset_id).get(None)
    names = repository.usernames(session, by_hour)
    annotators = []
    for user_id, hours_list in by_hour.items():
        total = sum(h.decisions for h in hours_list)
        annotators.append(
            AnnotatorStats(
                user_id=user_id,
                username=names.get(user_id, f"user {user_id}"),
                decisions=total,
                active_hours=len(hours_list),
                decisions_per_hour=total / len(hours_list),
                median_seconds=medians.get(user_id),
                by_hour=hours_list,
            )
        )
    annotators.sort(key=lambda a: (-a.decisions, a.username))
    return QueueStats(
        since=since,
        queues=queue_counts(session, dataset_id=dataset_id, now=now),
        annotators=annotators,
        median_seconds=overall,
        agreement=agreement(session, dataset_id=dataset_id),
    )


def _as_hour(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def agreement(session: Session, *, dataset_id: int | None = None) -> list[Agreement]:
    """Per kind, how often the second opinion gave the same verdict as the original decision
    (and the same class, where the verdict names one)."""
    pairs = repository.second_opinion_pairs(session, dataset_id)
    current = repository.current_decisions_of_tasks(
        session, {task for _, first, second in pairs for task in (first, second)}
    )
    totals: Counter[TaskKind] = Counter()
    agreed: Counter[TaskKind] = Counter()
    for kind, first, second in pairs:
        a, b = current.get(first), current.get(second)
        if a is None or b is None:
            continue
        totals[kind] += 1
        if a.verdict is b.verdict and a.class_id == b.class_id:
            agreed[kind] += 1
    return [
        Agreement(kind=kind, pairs=totals[kind], agreed=agreed[kind]) for kind in sorted(totals)
    ]


def progress(
    session: Session, *, user: User, since: datetime | None = None, now: datetime | None = None
) -> Progress:
    """The user's decisions since ``since`` (default: midnight UTC today)."""
    now = now or utcnow()
    since = since or now.replace(hour=0, minute=0, second=0, microsecond=0)
    by_kind = repository.decisions_by_kind(session, user_id=user.id, since=since)
    median = repository.median_seconds(session, since, user_id=user.id).get(None)
    return Progress(
        since=since, decisions=sum(by_kind.values()), by_kind=by_kind, median_seconds=median
    )


# --- what the pages show ------------------------------------------------------------------------


def references(
    session: Session,
    class_ids: Sequence[int],
    *,
    per_class: int,
    exclude_samples: Collection[int] = (),
) -> dict[int, ReferenceSet]:
    """Up to ``per_class`` samples showing each class: human-confirmed ones first, then usable
    samples of the class. ``exclude_samples`` (the samples under review) are never shown."""
    unique = list(dict.fromkeys(class_ids))
    confirmed = repository.confirmed_samples(session, unique, per_class=per_class * 2)
    fill = repository.class_samples(
        session, unique, per_class=per_class + len(exclude_samples), exclude=exclude_samples
    )
    result = {}
    for class_id in unique:
        ids = [
            sample_id
            for sample_id in dict.fromkeys(confirmed.get(class_id, []) + fill.get(class_id, []))
            if sample_id not in exclude_samples
        ]
        result[class_id] = ReferenceSet(class_id=class_id, sample_ids=ids[:per_class])
    return result


def dataset_classes(session: Session, dataset: Dataset) -> list[tuple[int, str]]:
    """Every class of the dataset as (id, name), by name."""
    return repository.dataset_classes(session, dataset.id)


def lease_batch(
    session: Session,
    *,
    user: User,
    dataset: Dataset,
    kind: TaskKind,
    n: int,
    exclude: Collection[int] = (),
    lease_for: timedelta = DEFAULT_LEASE,
    references_per_class: int = 8,
    class_grid: int = 48,
) -> ReviewBatch:
    """Leases up to ``n`` tasks of a queue (as ``lease_tasks``) with what the review pages
    show of them; a few set-based queries, whatever ``n`` is."""
    tasks = lease_tasks(
        session,
        user=user,
        kind=kind,
        dataset_id=dataset.id,
        n=n,
        exclude=exclude,
        lease_for=lease_for,
    )
    if kind is TaskKind.LABEL_CHECK:
        class_ids = [
            class_id
            for task in tasks
            for class_id in (task.given_class_id, *(s.class_id for s in task.suggestions))
            if class_id is not None
        ]
        subjects = {task.sample_id for task in tasks if task.sample_id is not None}
        return ReviewBatch(
            tasks=tasks,
            class_names=repository.class_names(session, set(class_ids)),
            references=references(
                session, class_ids, per_class=references_per_class, exclude_samples=subjects
            ),
        )
    if kind is TaskKind.CLASS_CHECK:
        class_ids = [task.class_id for task in tasks if task.class_id is not None]
        sizes = repository.class_sizes(session, class_ids)
        return ReviewBatch(
            tasks=tasks,
            class_names={class_id: name for class_id, (name, _) in sizes.items()},
            class_sizes={class_id: count for class_id, (_, count) in sizes.items()},
            class_samples=repository.class_samples(session, class_ids, per_class=class_grid),
        )
    return ReviewBatch(tasks=tasks)
