"""Queueing review tasks: batches from a round or an engineer, random audits, second opinions;
and the dataset lookups the CLI and the class search use.

Every function takes the session first and flushes, never commits. A batch is checked in full
before anything is written, so a refused request leaves no trace.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

from sqlalchemy.orm import Session

from app.datasets import repository as datasets_repository
from app.errors import Invalid
from app.logging import get_logger
from app.models import Dataset, TaskKind, TaskState, User, Verdict, utcnow
from app.review.records import CreatedTasks, TaskItem
from app.review.repository import tasks as task_repository
from app.review.repository import verdicts as verdict_repository

log = get_logger(__name__)

#: Most tasks one API request may queue (the service itself takes any number).
MAX_API_ITEMS = 10_000
MAX_SUGGESTIONS = 10
MAX_SOURCE_LENGTH = 100


def dataset_classes(session: Session, dataset: Dataset) -> list[tuple[int, str]]:
    """Every class of the dataset as (id, name), by name."""
    return datasets_repository.classes_by_name(session, dataset.id)


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
    ids = task_repository.insert_tasks(session, rows)
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
        found = task_repository.existing_class_ids(session, dataset.id, wanted)
        _refuse_missing(sorted(wanted - found), noun="class", nouns="classes", dataset=dataset)
    else:
        wanted = {item.sample_id for item in items if item.sample_id is not None}
        found = task_repository.existing_sample_ids(session, dataset.id, wanted)
        _refuse_missing(sorted(wanted - found), noun="sample", nouns="samples", dataset=dataset)
    suggested = {s.class_id for item in items for s in item.suggestions}
    if suggested:
        unknown = sorted(
            suggested - task_repository.existing_class_ids(session, dataset.id, suggested)
        )
        if unknown:
            raise Invalid(
                f"suggested class ids not in dataset {dataset.name!r}: {some_ids(unknown)}",
                class_ids=unknown[:100],
            )


def _refuse_missing(missing: Sequence[int], *, noun: str, nouns: str, dataset: Dataset) -> None:
    """Refuses items whose ``noun`` (class or sample) ids are not ``nouns`` of ``dataset``; the
    error's ``<noun>_ids`` detail holds the first 100."""
    if missing:
        raise Invalid(
            f"{len(missing)} {noun} ids are not {nouns} of dataset {dataset.name!r}: "
            f"{some_ids(missing)}",
            **{f"{noun}_ids": missing[:100]},
        )


def some_ids(ids: Sequence[int], shown: int = 10) -> str:
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
        for row in verdict_repository.current_decisions(session, dataset_id=dataset.id)
        if row.verdict is Verdict.JUNK and row.sample_id is not None
    }
    pool = [
        sample_id
        for sample_id in task_repository.usable_sample_ids(session, dataset.id)
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
    candidates = task_repository.done_tasks_without_second_opinion(session, dataset.id, kind)
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
        for copy in task_repository.task_copies(session, list(excluding))
    ]
    ids = task_repository.insert_tasks(session, rows)
    return CreatedTasks(created=len(ids), skipped=len(rows) - len(ids), task_ids=ids)
