"""Jobs for the workers: their state, lease, progress, metrics, artifacts and per-sample results.

The job kinds and specs are defined by the wire protocol (:mod:`ml.core.protocol`); the legal state
transitions live in :mod:`app.jobs.lifecycle`.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    REAL,
    BigInteger,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt, str_enum, utcnow
from ml.core.protocol.jobs import DeviceKind, JobKind

JsonType = JSON().with_variant(JSONB(), "postgresql")


class JobState(enum.StrEnum):
    QUEUED = "queued"  # waiting for a worker (from ``not_before_at`` on, when set)
    LEASED = "leased"  # a worker has it; not started yet
    RUNNING = "running"  # the worker has reported progress
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}

    @property
    def is_held(self) -> bool:
        """A worker holds the lease."""
        return self in {JobState.LEASED, JobState.RUNNING}


class Job(CreatedAt, Base):
    """One unit of ML work. ``fence`` counts the leases given so far: every worker write must
    carry the current value. ``attempts`` counts the leases that used up an attempt (a job
    handed back by a stopping worker gives its attempt back)."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_state_kind", "state", "kind"),
        Index("ix_jobs_dataset_id", "dataset_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[JobKind] = mapped_column(str_enum(JobKind, 32))
    state: Mapped[JobState] = mapped_column(str_enum(JobState, 16))
    spec: Mapped[dict[str, Any]] = mapped_column(JsonType)
    device: Mapped[DeviceKind] = mapped_column(str_enum(DeviceKind, 8))
    priority: Mapped[int] = mapped_column(default=0, doc="Higher first.")
    dataset_id: Mapped[int | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="SET NULL"), doc="The dataset it runs on, if one."
    )
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int]
    not_before_at: Mapped[datetime | None] = mapped_column(doc="Retry backoff: not leased before.")
    fence: Mapped[int] = mapped_column(default=0)
    worker: Mapped[str | None] = mapped_column(String(200), doc="Who holds or last held it.")
    lease_token_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="SET NULL"),
        doc="The worker token that leased it: every write of the lease must come with it.",
    )
    lease_expires_at: Mapped[datetime | None]
    leased_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    cancel_requested_at: Mapped[datetime | None]

    phase: Mapped[str] = mapped_column(String(32), default="")
    epoch: Mapped[int] = mapped_column(default=0)
    epochs: Mapped[int] = mapped_column(default=0)
    step: Mapped[int] = mapped_column(default=0)
    steps: Mapped[int] = mapped_column(default=0)
    images_per_second: Mapped[float] = mapped_column(REAL, default=0.0)
    log_tail: Mapped[str] = mapped_column(Text, default="", doc="The last lines, bounded.")
    log_lines: Mapped[int] = mapped_column(
        default=0, doc="Log lines received under the current fence (heartbeat idempotency)."
    )
    error: Mapped[str | None] = mapped_column(Text, doc="Why the last attempt failed.")
    summary: Mapped[dict[str, Any] | None] = mapped_column(JsonType, doc="What the job reported.")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class JobMetric(Base):
    """Metrics of one epoch of one lease of a job (``fence``), e.g. loss and accuracy."""

    __tablename__ = "job_metrics"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    fence: Mapped[int] = mapped_column(primary_key=True)
    epoch: Mapped[int] = mapped_column(primary_key=True)
    values: Mapped[dict[str, float]] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobArtifact(CreatedAt, Base):
    """A file a job uploaded (a checkpoint's weights or config), stored under the data dir."""

    __tablename__ = "job_artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    fence: Mapped[int]
    name: Mapped[str] = mapped_column(String(200))
    media_type: Mapped[str] = mapped_column(String(100))
    byte_size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_path: Mapped[str] = mapped_column(Text, doc="Relative to the data directory.")


class JobResultChunk(CreatedAt, Base):
    """The ledger of result chunks stored for a job's current lease: what makes re-uploading
    a chunk a no-op, and what ``complete`` checks."""

    __tablename__ = "job_result_chunks"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(primary_key=True)
    fence: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    rows: Mapped[int]


class JobResult(Base):
    """One sample's outputs from one job. ``topk_*`` are K little-endian ``int32`` class ids /
    ``float32`` probabilities, most probable first; ``label_prob`` is NaN or NULL when unknown."""

    __tablename__ = "job_results"
    # SQLite: the (job_id, sample_id) key is the table itself, not a second index beside it.
    __table_args__ = ({"sqlite_with_rowid": False},)

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    sample_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    chunk: Mapped[int]
    topk_class_id: Mapped[bytes | None] = mapped_column(LargeBinary)
    topk_prob: Mapped[bytes | None] = mapped_column(LargeBinary)
    label_prob: Mapped[float | None] = mapped_column(REAL)
    junk_score: Mapped[float | None] = mapped_column(REAL)
