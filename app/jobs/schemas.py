"""What the job services return, and the engineer API's bodies (the worker's are in
:mod:`ml.core.protocol`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from app.models import Job, JobArtifact, JobMetric, JobState
from ml.core.protocol.jobs import DeviceKind, JobKind, ManifestRef, Recipe

# --- service results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class JobDetail:
    """A job with its current lease's metrics (by epoch), its artifacts and its results so far."""

    job: Job
    metrics: list[JobMetric]
    artifacts: list[JobArtifact]
    result_rows: int
    result_chunks: int


@dataclass(frozen=True)
class UploadedFile:
    """A request body streamed to a temporary file, with what was measured on the way."""

    path: Path
    sha256: str
    byte_size: int


# --- API bodies ---------------------------------------------------------------------------------


class SampleSet(BaseModel):
    """Samples a job runs on: an uploaded manifest, or usable samples of the job's dataset.

    For a dataset: ``sample_ids`` (default: every usable sample), and optionally per sample
    ``class_ids`` (labels other than the imported ones), ``junk`` flags (for the junk
    classifier: classes ``normal``/``junk``) and ``folds``.
    """

    model_config = ConfigDict(extra="forbid")

    manifest: Annotated[str | None, Field(pattern=r"^[0-9a-f]{64}$")] = None
    sample_ids: list[int] | None = None
    class_ids: list[int] | None = None
    junk: list[bool] | None = None
    folds: list[int] | None = None


class JobCreate(BaseModel):
    """A job to run. Which of ``train``, ``predict``, ``eval``, ``fold``, ``model_job_id`` and
    ``teacher_job_ids`` are needed depends on the kind (see :mod:`ml.core.protocol.jobs`)."""

    model_config = ConfigDict(extra="forbid")

    kind: JobKind
    dataset_id: int | None = None
    recipe: Recipe | None = None
    train: SampleSet | None = None
    predict: SampleSet | None = None
    eval: SampleSet | None = None
    fold: Annotated[int | None, Field(ge=0, le=127)] = None
    top_k: Annotated[int, Field(ge=1, le=100)] = 5
    model_job_id: int | None = None
    teacher_job_ids: list[int] = Field(default_factory=list)
    seed: int | None = None
    keep_probs: bool = False
    device: DeviceKind = DeviceKind.ANY
    priority: int = 0
    max_attempts: Annotated[int | None, Field(ge=1, le=100)] = None


class JobRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: JobKind
    state: JobState
    device: DeviceKind
    priority: int
    dataset_id: int | None
    spec: dict[str, Any]
    attempts: int
    max_attempts: int
    fence: int
    worker: str | None
    not_before_at: datetime | None
    lease_expires_at: datetime | None
    cancel_requested_at: datetime | None
    created_at: datetime
    leased_at: datetime | None
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None
    phase: str
    epoch: int
    epochs: int
    step: int
    steps: int
    images_per_second: float
    error: str | None
    summary: dict[str, Any] | None


class MetricRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    epoch: int
    values: dict[str, float]


class ArtifactRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    media_type: str
    byte_size: int
    sha256: str
    created_at: datetime


class JobDetailRead(JobRead):
    metrics: list[MetricRead]
    artifacts: list[ArtifactRead]
    log_tail: list[str]
    result_rows: int
    result_chunks: int


class ManifestCreated(BaseModel):
    manifest: ManifestRef
