"""The review queue: tasks that annotators lease and decide, and their append-only decisions."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigIntId, str_enum, utcnow


class TaskKind(enum.StrEnum):
    JUNK_CHECK = "junk_check"  # is this image junk? (flagged by a model)
    JUNK_AUDIT = "junk_audit"  # the same question on a random sample of what is believed clean
    LABEL_CHECK = "label_check"  # is the given label right; if not, which class, or junk?
    CLASS_CHECK = "class_check"  # keep or drop a small class

    @property
    def verdicts(self) -> frozenset[Verdict]:
        """The verdicts a decision on a task of this kind may give (undo aside)."""
        return VERDICTS_BY_KIND[self]

    @property
    def is_about_a_class(self) -> bool:
        """class_check tasks are about a class; every other kind is about a sample."""
        return self is TaskKind.CLASS_CHECK


class TaskState(enum.StrEnum):
    PENDING = "pending"  # waiting in the queue, never leased
    LEASED = "leased"  # held by ``lease_owner_id`` until ``lease_expires_at``, then available
    DONE = "done"  # decided
    CANCELLED = "cancelled"  # withdrawn by an engineer


class Verdict(enum.StrEnum):
    JUNK = "junk"
    NOT_JUNK = "not_junk"
    ACCEPT = "accept"  # the given label is right
    RELABEL = "relabel"  # the sample belongs to the decision's ``class_id``
    UNSURE = "unsure"
    KEEP = "keep"
    DROP = "drop"
    UNDO = "undo"  # withdraws the decision named in ``supersedes_id``


VERDICTS_BY_KIND: dict[TaskKind, frozenset[Verdict]] = {
    TaskKind.JUNK_CHECK: frozenset({Verdict.JUNK, Verdict.NOT_JUNK}),
    TaskKind.JUNK_AUDIT: frozenset({Verdict.JUNK, Verdict.NOT_JUNK}),
    TaskKind.LABEL_CHECK: frozenset(
        {Verdict.ACCEPT, Verdict.RELABEL, Verdict.JUNK, Verdict.UNSURE}
    ),
    TaskKind.CLASS_CHECK: frozenset({Verdict.KEEP, Verdict.DROP}),
}

_PENDING = text("state = 'pending'")
_LEASED = text("state = 'leased'")
_FIRST_SAMPLE_TASK = text("sample_id IS NOT NULL AND origin_task_id IS NULL")
_FIRST_CLASS_TASK = text("class_id IS NOT NULL AND origin_task_id IS NULL")
_CLASS_TASK = text("class_id IS NOT NULL")
_SECOND_OPINION = text("origin_task_id IS NOT NULL")
_UNDO = text("supersedes_id IS NOT NULL")
_CONFIRMATION = text("kind = 'label_check' AND verdict IN ('accept', 'relabel')")
_CLASS_VOTE = text("kind = 'class_check'")


def _where(clause: Any) -> dict[str, Any]:
    """A partial-index predicate for both engines."""
    return {"postgresql_where": clause, "sqlite_where": clause}


class ReviewTask(Base):
    """One question for an annotator, about one sample or (class_check) one class.

    ``lease_version`` goes up by one each time the task is leased (or reopened by an undo): it is
    the fencing token a decision carries, so a decision made under a lease that was since handed
    to someone else is refused. A task whose lease expired is available again as it is (state
    ``leased``, expiry in the past): ``lease_owner_id`` keeps the last holder, so that holder's
    late decision is still accepted while nobody else has taken the task.

    Tasks are unique per (kind, subject, source), so re-running a round queues nothing twice; a
    second-opinion task is a copy of a done task (``origin_task_id``) that its first decider
    (``exclude_user_id``) may not lease.

    Every change of state rewrites the row in each index it belongs to (``state`` is in the
    partial indexes' predicates), so the indexes are few and partial where they can be.
    """

    __tablename__ = "review_tasks"
    __table_args__ = (
        CheckConstraint("(sample_id IS NULL) <> (class_id IS NULL)", name="one_subject"),
        # The queue, scanned backwards by a lease: highest priority first, then newest first.
        Index(
            "ix_review_tasks_pending", "dataset_id", "kind", "priority", "id", **_where(_PENDING)
        ),
        Index("ix_review_tasks_pending_kind", "kind", "priority", "id", **_where(_PENDING)),
        # Leases: a holder's own tasks; and the queue's expired leases, which a lease takes
        # like pending tasks (no sweeper: an expired lease is simply available).
        Index("ix_review_tasks_leased_owner", "lease_owner_id", "kind", **_where(_LEASED)),
        Index("ix_review_tasks_leased", "dataset_id", "kind", "priority", "id", **_where(_LEASED)),
        Index("ix_review_tasks_class_id", "class_id", **_where(_CLASS_TASK)),
        Index(
            "uq_review_tasks_sample_subject",
            "kind",
            "sample_id",
            "source",
            unique=True,
            **_where(_FIRST_SAMPLE_TASK),
        ),
        Index(
            "uq_review_tasks_class_subject",
            "kind",
            "class_id",
            "source",
            unique=True,
            **_where(_FIRST_CLASS_TASK),
        ),
        Index(
            "uq_review_tasks_origin_task_id",
            "origin_task_id",
            unique=True,
            **_where(_SECOND_OPINION),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    kind: Mapped[TaskKind] = mapped_column(str_enum(TaskKind, 16))
    sample_id: Mapped[int | None] = mapped_column(
        BigIntId, ForeignKey("samples.id", ondelete="CASCADE"), index=True
    )
    class_id: Mapped[int | None] = mapped_column(ForeignKey("classes.id", ondelete="CASCADE"))
    priority: Mapped[float] = mapped_column(Float, default=0.0, doc="Higher is leased first.")
    score: Mapped[float | None] = mapped_column(
        Float, doc="The score that queued it, e.g. p(junk); its meaning comes with the source."
    )
    source: Mapped[str] = mapped_column(
        String(100), doc="What queued it: a round or model (e.g. 'junk iteration 2'), 'manual'."
    )
    reason: Mapped[str] = mapped_column(Text, default="", doc="Why, in words, for the annotator.")
    suggestions: Mapped[list[list[float]] | None] = mapped_column(
        JSON,
        doc="label_check: the model's top classes, best first, as [class_id, probability] pairs.",
    )
    state: Mapped[TaskState] = mapped_column(str_enum(TaskState, 16), default=TaskState.PENDING)
    lease_owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    lease_expires_at: Mapped[datetime | None]
    lease_version: Mapped[int] = mapped_column(default=0)
    origin_task_id: Mapped[int | None] = mapped_column(
        BigIntId, ForeignKey("review_tasks.id", ondelete="CASCADE")
    )
    exclude_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None]


class ReviewDecision(Base):
    """A human verdict on a task. Rows are only ever added.

    ``class_id`` is the class the decision is about: for class_check the class judged, for
    label_check accept/relabel the class the sample is confirmed in. An ``undo`` row withdraws
    the decision in its ``supersedes_id``; a sample's current human verdict is its latest
    decision that is neither an undo nor withdrawn. ``seconds`` is the time the annotator spent,
    measured in the browser.

    ``dataset_id``, ``kind``, ``sample_id`` and ``class_id`` are copied from the task (or, for a
    relabel, checked against the task's dataset) and carry no foreign key of their own: rows go
    when their task goes, and a key check per row would cost a random read per decision.
    """

    __tablename__ = "review_decisions"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key"),
        Index("uq_review_decisions_supersedes_id", "supersedes_id", unique=True, **_where(_UNDO)),
        Index("ix_review_decisions_user_id_created_at", "user_id", "created_at"),
        Index("ix_review_decisions_dataset_id_created_at", "dataset_id", "created_at"),
        Index("ix_review_decisions_sample_id", "sample_id"),
        # Reference images: samples a human confirmed in a class.
        Index("ix_review_decisions_confirmed_class", "class_id", **_where(_CONFIRMATION)),
        # Class votes: who voted on a class already (a lease never offers it to them again).
        Index("ix_review_decisions_class_vote", "class_id", "user_id", **_where(_CLASS_VOTE)),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    task_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("review_tasks.id", ondelete="CASCADE"), index=True
    )
    dataset_id: Mapped[int]
    kind: Mapped[TaskKind] = mapped_column(str_enum(TaskKind, 16))
    sample_id: Mapped[int | None] = mapped_column(BigIntId)
    class_id: Mapped[int | None]
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    verdict: Mapped[Verdict] = mapped_column(str_enum(Verdict, 16))
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    idempotency_key: Mapped[str] = mapped_column(String(64))
    lease_version: Mapped[int] = mapped_column(doc="The task's lease the decision was made under.")
    supersedes_id: Mapped[int | None] = mapped_column(
        BigIntId, ForeignKey("review_decisions.id", ondelete="CASCADE")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
