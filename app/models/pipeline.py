"""The cleaning pipeline of a dataset: its stage and config, its rounds (with their jobs), every
sample's and class's current state, and the append-only events that explain each state.

A sample's ``status`` is derived, never set by hand: from ``model_status`` (what the model rules
decided), the human verdict applied to it (``human_verdict``, from the review decision
``decision_id``) and whether its current label's class was dropped (see
:func:`app.pipeline.rules.resolve_status`). Each change appends a :class:`PipelineEvent`.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    REAL,
    BigInteger,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, BigIntId, str_enum, utcnow
from app.models.job import JsonType
from app.models.review import Verdict


class Stage(enum.StrEnum):
    """Where a dataset's cleaning is, in the order the workflow goes."""

    JUNK = "junk"
    LABEL = "label"
    CLASS = "class"
    FINAL = "final"
    DONE = "done"


class RoundKind(enum.StrEnum):
    JUNK_SEED = "junk_seed"  # non-3-channel images + a random sample → junk_check
    JUNK_ITERATION = "junk_iteration"  # train the junk model, score all, queue p(junk) ≥ t
    FLAG_AUDIT = "flag_audit"  # a random sample of one iteration's strict flags → junk_audit
    BULK_ACCEPT = "bulk_accept"  # mark an iteration's strict flags junk, once audited
    JUNK_AUDIT = "junk_audit"  # a random sample of what is believed clean → junk_audit
    CROSS_VALIDATION = "cross_validation"  # K fold jobs, top-k rule, confident learning
    PULL_BACK = "pull_back"  # train on the kept set, predict the rejected set
    HUMAN_SAMPLE = "human_sample"  # a random fraction of the rejected → label_check
    CLASS_REVIEW = "class_review"  # classes under the minimum kept count → class_check
    FINAL_TRAINING = "final_training"  # train_final on the final set

    @property
    def stage(self) -> Stage:
        return _ROUND_STAGES[self]


_ROUND_STAGES = {
    RoundKind.JUNK_SEED: Stage.JUNK,
    RoundKind.JUNK_ITERATION: Stage.JUNK,
    RoundKind.FLAG_AUDIT: Stage.JUNK,
    RoundKind.BULK_ACCEPT: Stage.JUNK,
    RoundKind.JUNK_AUDIT: Stage.JUNK,
    RoundKind.CROSS_VALIDATION: Stage.LABEL,
    RoundKind.PULL_BACK: Stage.LABEL,
    RoundKind.HUMAN_SAMPLE: Stage.LABEL,
    RoundKind.CLASS_REVIEW: Stage.CLASS,
    RoundKind.FINAL_TRAINING: Stage.FINAL,
}


class RoundState(enum.StrEnum):
    RUNNING = "running"  # its jobs are queued or running
    REVIEWING = "reviewing"  # its review tasks are not all decided
    DONE = "done"
    FAILED = "failed"  # a job failed for good; retrying the round re-queues it
    CANCELLED = "cancelled"

    @property
    def is_open(self) -> bool:
        return self in {RoundState.RUNNING, RoundState.REVIEWING}


class SampleStatus(enum.StrEnum):
    CANDIDATE = "candidate"  # not junk, not judged by a label rule yet
    JUNK = "junk"  # a human said junk, or a bulk acceptance did
    KEPT = "kept"  # the top-k rule kept its label
    REJECTED = "rejected"  # the top-k rule rejected its label (or a human was unsure)
    PULLED_BACK = "pulled_back"  # rejected, then confirmed by a pull-back round's model
    CONFIRMED = "confirmed"  # a human confirmed its given label
    RELABELLED = "relabelled"  # a human gave it another class (``label_class_id``)
    DROPPED = "dropped"  # its class was dropped in the class review
    DUPLICATE = "duplicate"  # a byte-identical copy of another sample; left out

    @property
    def trainable(self) -> bool:
        """In the training set: the kept set of the label stage, the final set after it."""
        return self in TRAINABLE


TRAINABLE = frozenset(
    {
        SampleStatus.CANDIDATE,
        SampleStatus.KEPT,
        SampleStatus.PULLED_BACK,
        SampleStatus.CONFIRMED,
        SampleStatus.RELABELLED,
    }
)


class ClassState(enum.StrEnum):
    ACTIVE = "active"  # never reviewed
    REVIEW = "review"  # queued for a class review
    KEPT = "kept"  # a human kept it
    DROPPED = "dropped"  # a human dropped it: its samples leave the training set


class EventKind(enum.StrEnum):
    QUEUED = "queued"  # a review task was queued for it (``detail``: kind and round)
    KEPT = "kept"  # the top-k rule kept it (``score``: p(label))
    REJECTED = "rejected"  # the top-k rule rejected it
    PULLED_BACK = "pulled_back"  # a pull-back round's model confirmed its label
    BULK_JUNK = "bulk_junk"  # accepted as junk in bulk (``score``: p(junk))
    VERDICT = "verdict"  # a human decision was applied (``decision_id``)
    WITHDRAWN = "withdrawn"  # its human decision was undone, with none left standing
    CLASS_DROPPED = "class_dropped"  # its class (or, without a sample, the class) was dropped
    CLASS_KEPT = "class_kept"  # its class was kept (or restored after an undone drop)
    DUPLICATE = "duplicate"  # left out as a copy of another sample


class Pipeline(Base):
    """One dataset's cleaning loop. ``decisions_seen_id``: review decisions up to this id are
    applied (later ones are applied by the next reconcile)."""

    __tablename__ = "pipelines"

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), unique=True
    )
    stage: Mapped[Stage] = mapped_column(str_enum(Stage, 16))
    auto: Mapped[bool] = mapped_column(default=False)
    config: Mapped[dict[str, Any]] = mapped_column(JsonType)
    decisions_seen_id: Mapped[int] = mapped_column(BigInteger, default=0)
    note: Mapped[str] = mapped_column(
        Text, default="", doc="Why auto mode stopped, or what the last step said."
    )
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PipelineRound(Base):
    """One step of the loop. ``source`` names it on the review tasks it queued (unique per
    dataset); ``request_key`` makes a retried start return this round instead of a new one."""

    __tablename__ = "pipeline_rounds"
    __table_args__ = (
        UniqueConstraint("pipeline_id", "kind", "number"),
        UniqueConstraint("pipeline_id", "request_key"),
        Index("ix_pipeline_rounds_pipeline_id_state", "pipeline_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    kind: Mapped[RoundKind] = mapped_column(str_enum(RoundKind, 32))
    number: Mapped[int] = mapped_column(doc="1, 2, … per kind.")
    stage: Mapped[Stage] = mapped_column(str_enum(Stage, 16))
    state: Mapped[RoundState] = mapped_column(str_enum(RoundState, 16))
    phase: Mapped[str] = mapped_column(String(32), default="", doc="Within running: which jobs.")
    source: Mapped[str] = mapped_column(String(100))
    request_key: Mapped[str | None] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JsonType)
    stats: Mapped[dict[str, Any]] = mapped_column(JsonType)
    error: Mapped[str | None] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PipelineRoundJob(Base):
    """A job a round queued, with its part in it (``fold 0``, ``train``, ``cleanlab``…)."""

    __tablename__ = "pipeline_round_jobs"

    round_id: Mapped[int] = mapped_column(
        ForeignKey("pipeline_rounds.id", ondelete="CASCADE"), primary_key=True
    )
    job_id: Mapped[int] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(32))


class PipelineSample(Base):
    """A sample's current state in its dataset's pipeline (see the module docstring).

    ``label_rank``: rank of the current label in the latest prediction of it (0 = top class,
    -1 = not in the predicted top-k), from the job ``pred_job_id`` whose top-k also gives the
    label_check suggestions. ``cl_issue``/``cl_quality``: confident learning's verdict and
    label-quality score (lower = more likely mislabeled) from the latest cross-validation.
    ``knn_issue``/``knn_agreement``: the kNN detector's verdict and the share of the sample's
    nearest neighbours in embedding space that carry its label (lower = more likely mislabeled).
    """

    __tablename__ = "pipeline_samples"
    __table_args__ = (
        Index("ix_pipeline_samples_dataset_id_status", "dataset_id", "status"),
        Index("ix_pipeline_samples_dataset_id_label_class_id", "dataset_id", "label_class_id"),
    )

    sample_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("samples.id", ondelete="CASCADE"), primary_key=True
    )
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    status: Mapped[SampleStatus] = mapped_column(str_enum(SampleStatus, 16))
    model_status: Mapped[SampleStatus] = mapped_column(str_enum(SampleStatus, 16))
    given_class_id: Mapped[int] = mapped_column(ForeignKey("classes.id", ondelete="CASCADE"))
    label_class_id: Mapped[int] = mapped_column(ForeignKey("classes.id", ondelete="CASCADE"))
    human_verdict: Mapped[Verdict | None] = mapped_column(str_enum(Verdict, 16))
    decision_id: Mapped[int | None] = mapped_column(BigInteger)
    junk_score: Mapped[float | None] = mapped_column(REAL)
    label_rank: Mapped[int | None] = mapped_column(SmallInteger)
    pred_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    cl_issue: Mapped[bool | None]
    cl_quality: Mapped[float | None] = mapped_column(REAL)
    knn_issue: Mapped[bool | None]
    knn_agreement: Mapped[float | None] = mapped_column(REAL)
    round_id: Mapped[int | None] = mapped_column(
        ForeignKey("pipeline_rounds.id", ondelete="SET NULL"),
        doc="The round whose rule last set ``model_status``.",
    )
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PipelineClass(Base):
    """A class's state in the class review, from its votes (see
    :func:`app.pipeline.rules.class_outcome`). An engineer who restores a dropped class sets
    aside every vote made until then: only class_check decisions with an id above
    ``votes_after_id`` count."""

    __tablename__ = "pipeline_classes"

    class_id: Mapped[int] = mapped_column(
        ForeignKey("classes.id", ondelete="CASCADE"), primary_key=True
    )
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    state: Mapped[ClassState] = mapped_column(str_enum(ClassState, 16))
    decision_id: Mapped[int | None] = mapped_column(BigInteger)
    round_id: Mapped[int | None] = mapped_column(
        ForeignKey("pipeline_rounds.id", ondelete="SET NULL")
    )
    votes_after_id: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    restored_at: Mapped[datetime | None]
    restored_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PipelineEvent(Base):
    """Why a sample (or, with ``sample_id`` null, a class) is where it is. Only ever added.

    ``score`` depends on the kind: p(junk) for a junk flag or bulk acceptance, p(label) for a
    top-k or pull-back verdict. ``job_id``: the model that decided; ``decision_id``: the human
    decision applied; ``class_id``: the sample's label after the event (or the class itself).
    """

    __tablename__ = "pipeline_events"
    __table_args__ = (
        Index("ix_pipeline_events_sample_id", "sample_id"),
        Index("ix_pipeline_events_round_id_kind", "round_id", "kind"),
        Index("ix_pipeline_events_dataset_id_kind", "dataset_id", "kind"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    round_id: Mapped[int | None] = mapped_column(
        ForeignKey("pipeline_rounds.id", ondelete="SET NULL")
    )
    sample_id: Mapped[int | None] = mapped_column(BigInteger)
    class_id: Mapped[int | None]
    kind: Mapped[EventKind] = mapped_column(str_enum(EventKind, 16))
    from_status: Mapped[SampleStatus | None] = mapped_column(str_enum(SampleStatus, 16))
    to_status: Mapped[SampleStatus | None] = mapped_column(str_enum(SampleStatus, 16))
    score: Mapped[float | None] = mapped_column(REAL)
    job_id: Mapped[int | None]
    decision_id: Mapped[int | None] = mapped_column(BigInteger)
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
