"""Review API: engineers queue tasks and read statistics; annotators lease, decide and undo.

Annotators call it from the browser with their session cookie and the CSRF header; scripts
(simulated annotators, engineers) may use bearer tokens.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from app.auth.deps import AnnotatorDep, EngineerDep
from app.auth.service import Principal
from app.datasets import access
from app.datasets.deps import DatasetDep
from app.db import SessionDep
from app.review.records import DecisionInput, LeasedTask, Suggestion, TaskItem
from app.review.schemas import (
    AuditCreate,
    AuditCreatedRead,
    CreatedTasksRead,
    CurrentVerdictRead,
    DecisionBatchCreate,
    DecisionBatchRead,
    DecisionRead,
    HistoryEntryRead,
    LeaseCreate,
    LeasedTaskRead,
    LeaseHold,
    LeaseRead,
    LeaseReleaseRead,
    LeaseRenewalRead,
    ProgressRead,
    QueueCountRead,
    QueueStatsRead,
    SampleReviewRead,
    SecondOpinionCreate,
    TaskBatchCreate,
    UndoCreate,
    UndoRead,
)
from app.review.service import decisions as decision_service
from app.review.service import leases as lease_service
from app.review.service import stats as stats_service
from app.review.service import tasks as task_service
from app.review.service import verdicts as verdict_service

router = APIRouter(prefix="/api/review", tags=["review"])

#: How long the browser may cache a dataset's class list (the search box loads it once).
CLASS_LIST_MAX_AGE = 300


def lease_duration(request: Request, principal: Principal) -> timedelta:
    """How long a lease lasts. A signed-in browser's is short
    (``THRESHER_REVIEW_BROWSER_LEASE_SECONDS``): the review page renews it while it is open and
    visible, so an abandoned tab holds its tasks for about that long. An API token's lasts
    ``THRESHER_REVIEW_LEASE_SECONDS``."""
    settings = request.app.state.settings
    if principal.via == "session":
        return timedelta(seconds=settings.review_browser_lease_seconds)
    return timedelta(seconds=settings.review_lease_seconds)


# --- engineers: queueing ------------------------------------------------------------------------


@router.post("/tasks")
def create_tasks(
    principal: EngineerDep, body: TaskBatchCreate, session: SessionDep
) -> CreatedTasksRead:
    """Queues tasks in bulk; items already queued from the same source are skipped."""
    items = [
        TaskItem(
            sample_id=item.sample_id,
            class_id=item.class_id,
            priority=item.priority,
            score=item.score,
            reason=item.reason,
            suggestions=tuple(Suggestion(s.class_id, s.probability) for s in item.suggestions),
        )
        for item in body.items
    ]
    created = task_service.create_tasks(
        session,
        dataset=access.visible_dataset(session, principal, body.dataset_id),
        kind=body.kind,
        items=items,
        source=body.source,
        reason=body.reason,
        created_by=principal.user,
        max_items=task_service.MAX_API_ITEMS,
    )
    return CreatedTasksRead.model_validate(created)


@router.post("/tasks/audit")
def create_audit(
    principal: EngineerDep, body: AuditCreate, session: SessionDep
) -> AuditCreatedRead:
    """Queues junk_audit tasks for a seeded random sample of the samples believed clean."""
    created, seed, source = task_service.create_audit(
        session,
        dataset=access.visible_dataset(session, principal, body.dataset_id),
        n=body.n,
        seed=body.seed,
        source=body.source,
        created_by=principal.user,
    )
    return AuditCreatedRead(
        created=created.created, skipped=created.skipped, seed=seed, source=source
    )


@router.post("/tasks/second-opinion")
def request_second_opinions(
    principal: EngineerDep, body: SecondOpinionCreate, session: SessionDep
) -> CreatedTasksRead:
    """Queues a random fraction of the decided tasks again, for a different annotator."""
    created = task_service.request_second_opinions(
        session,
        dataset=access.visible_dataset(session, principal, body.dataset_id),
        kind=body.kind,
        fraction=body.fraction,
        seed=body.seed,
        created_by=principal.user,
    )
    return CreatedTasksRead.model_validate(created)


# --- annotators: leasing and deciding -----------------------------------------------------------


@router.post("/leases")
def lease_tasks(
    principal: AnnotatorDep, body: LeaseCreate, session: SessionDep, request: Request
) -> LeaseRead:
    """Leases up to ``n`` tasks of a queue; the caller's own live leases come back first.
    Without ``dataset_id``: from any dataset the caller may see."""
    targets = access.visible_or_named(session, principal, body.dataset_id)
    tasks: list[LeasedTask] = []
    for dataset_id in [None] if targets is None else targets:
        tasks += lease_service.lease_tasks(
            session,
            user=principal.user,
            kind=body.kind,
            dataset_id=dataset_id,
            n=body.n - len(tasks),
            exclude=body.exclude,
            lease_for=lease_duration(request, principal),
        )
        if len(tasks) >= body.n:
            break
    return LeaseRead(tasks=[LeasedTaskRead.model_validate(task) for task in tasks])


@router.post("/leases/renew")
def renew_leases(
    principal: AnnotatorDep, body: LeaseHold, session: SessionDep, request: Request
) -> LeaseRenewalRead:
    """Extends your leases on these tasks by a lease length (a review page's heartbeat); a
    lapsed one comes back unless someone else leased the task since (``lost``)."""
    renewal = lease_service.renew_leases(
        session,
        user=principal.user,
        task_ids=body.task_ids,
        lease_for=lease_duration(request, principal),
    )
    return LeaseRenewalRead.model_validate(renewal)


@router.post("/leases/release")
def release_leases(
    principal: AnnotatorDep, body: LeaseHold, session: SessionDep
) -> LeaseReleaseRead:
    """Gives back your leases on these tasks, so others may take them now."""
    released = lease_service.release_leases(session, user=principal.user, task_ids=body.task_ids)
    return LeaseReleaseRead(released=released)


@router.post("/decisions")
def decide(
    principal: AnnotatorDep, body: DecisionBatchCreate, session: SessionDep
) -> DecisionBatchRead:
    """Records decisions, all or none. A retry with the same keys gets the same answer."""
    records = decision_service.decide(
        session,
        user=principal.user,
        decisions=[
            DecisionInput(
                task_id=d.task_id,
                lease_version=d.lease_version,
                verdict=d.verdict,
                idempotency_key=d.idempotency_key,
                seconds=d.seconds,
                class_id=d.class_id,
            )
            for d in body.decisions
        ],
    )
    return DecisionBatchRead(decisions=[DecisionRead.model_validate(r) for r in records])


@router.post("/undo")
def undo(
    principal: AnnotatorDep, body: UndoCreate, session: SessionDep, request: Request
) -> UndoRead:
    """Withdraws one of your decisions and leases its task to you again."""
    result = decision_service.undo(
        session,
        user=principal.user,
        decision_id=body.decision_id,
        idempotency_key=body.idempotency_key,
        seconds=body.seconds,
        lease_for=lease_duration(request, principal),
    )
    return UndoRead.model_validate(result)


@router.get("/queues")
def open_queues(principal: AnnotatorDep, session: SessionDep) -> list[QueueCountRead]:
    """Queues with work left: tasks available to lease and tasks leased right now."""
    visible = access.visible_dataset_ids(session, principal)
    return [
        QueueCountRead.model_validate(queue)
        for queue in stats_service.open_queues(session)
        if visible is None or queue.dataset_id in visible
    ]


@router.get("/progress")
def my_progress(principal: AnnotatorDep, session: SessionDep) -> ProgressRead:
    """Your decisions today (since midnight UTC)."""
    return ProgressRead.model_validate(stats_service.progress(session, user=principal.user))


@router.get("/datasets/{dataset_id}/classes")
def class_list(
    _: AnnotatorDep, dataset: DatasetDep, session: SessionDep, response: Response
) -> dict[str, list[Any]]:
    """Every class of the dataset as ``[id, name]`` pairs, by name (for the class search)."""
    response.headers["Cache-Control"] = f"private, max-age={CLASS_LIST_MAX_AGE}"
    return {"classes": [list(pair) for pair in task_service.dataset_classes(session, dataset)]}


# --- engineers: statistics and history ----------------------------------------------------------


@router.get("/stats")
def queue_stats(
    principal: EngineerDep,
    session: SessionDep,
    dataset_id: int | None = None,
    hours: Annotated[int, Query(ge=1, le=24 * 90)] = 24,
) -> QueueStatsRead:
    """Per queue: tasks by state. Per annotator: decisions per hour and median seconds per
    decision over the last ``hours``. Agreement where a task was decided twice. Engineers
    granted only some datasets name one of them."""
    access.check_scope(session, principal, dataset_id)
    stats = stats_service.queue_stats(session, dataset_id=dataset_id, hours=hours)
    return QueueStatsRead.model_validate(stats)


@router.get("/samples/{sample_id}")
def sample_review(principal: EngineerDep, sample_id: int, session: SessionDep) -> SampleReviewRead:
    """A sample's current human verdict and every decision on it."""
    access.check_can_see_sample(session, principal, sample_id)
    current = verdict_service.current_verdicts(session, sample_ids=[sample_id]).get(sample_id)
    return SampleReviewRead(
        current=CurrentVerdictRead.model_validate(current) if current else None,
        history=[
            HistoryEntryRead.model_validate(entry)
            for entry in verdict_service.sample_history(session, sample_id)
        ],
    )
