"""Reading what the annotators decided: each sample's current human verdict and its history."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy.orm import Session

from app.models import TaskKind
from app.review.records import CurrentVerdict, HistoryEntry
from app.review.repository import verdicts as verdict_repository


def current_verdicts(
    session: Session,
    *,
    dataset_id: int | None = None,
    sample_ids: Collection[int] | None = None,
    kinds: Collection[TaskKind] | None = None,
) -> dict[int, CurrentVerdict]:
    """Each reviewed sample's current human verdict, by sample id: its latest decision (among
    ``kinds`` when given) that no undo withdrew. Samples without one are absent."""
    rows = verdict_repository.current_decisions(
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
        for entry in verdict_repository.sample_history(session, sample_id)
        for row in [entry.decision]
    ]
