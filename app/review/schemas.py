"""The review API's request and response bodies (pydantic). ``*Read`` bodies are built from
the services' records (:mod:`app.review.records`) by attribute."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.models import TaskKind, Verdict


class SuggestionIn(BaseModel):
    class_id: int
    probability: float = Field(ge=0.0, le=1.0)


class TaskItemIn(BaseModel):
    sample_id: int | None = None
    class_id: int | None = None
    priority: float = 0.0
    score: float | None = None
    reason: str | None = Field(default=None, max_length=2000)
    suggestions: list[SuggestionIn] = Field(default_factory=list)


class TaskBatchCreate(BaseModel):
    dataset_id: int
    kind: TaskKind
    source: str = Field(default="manual", description="Which round or model queued these.")
    reason: str = Field(default="", max_length=2000)
    items: list[TaskItemIn]


class AuditCreate(BaseModel):
    dataset_id: int
    n: int = Field(description="How many samples to audit.")
    seed: int | None = Field(default=None, description="Chosen at random when left out.")
    source: str | None = Field(default=None, description="Defaults to 'audit seed <seed>'.")


class SecondOpinionCreate(BaseModel):
    dataset_id: int
    kind: TaskKind
    fraction: float = Field(description="Share of the decided tasks to ask again, (0, 1].")
    seed: int | None = None


class CreatedTasksRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    created: int
    skipped: int


class AuditCreatedRead(CreatedTasksRead):
    seed: int
    source: str


class LeaseCreate(BaseModel):
    kind: TaskKind
    dataset_id: int | None = None
    n: int = 1
    exclude: list[int] = Field(
        default_factory=list,
        description="Ids of tasks the caller holds and shows already: not handed back again.",
    )


class LeaseHold(BaseModel):
    """Tasks the caller holds: to renew (a page's heartbeat) or to give back."""

    task_ids: list[int] = Field(max_length=1_000)


class LeaseRenewalRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    renewed: list[int]
    lost: list[int]
    lease_expires_at: datetime


class LeaseReleaseRead(BaseModel):
    released: list[int]


class SuggestionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    class_id: int
    probability: float


class LeasedTaskRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    dataset_id: int
    kind: TaskKind
    sample_id: int | None
    class_id: int | None
    given_class_id: int | None
    priority: float
    score: float | None
    source: str
    reason: str
    suggestions: list[SuggestionRead]
    lease_version: int
    lease_expires_at: datetime


class LeaseRead(BaseModel):
    tasks: list[LeasedTaskRead]


class DecisionIn(BaseModel):
    task_id: int
    lease_version: int
    verdict: Verdict
    class_id: int | None = Field(default=None, description="The new class of a relabel.")
    seconds: float = Field(default=0.0, description="Time spent on the decision.")
    idempotency_key: str = Field(description="Unique per user; a retry sends the same key.")


class DecisionBatchCreate(BaseModel):
    decisions: list[DecisionIn]


class DecisionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    task_id: int
    kind: TaskKind
    sample_id: int | None
    class_id: int | None
    verdict: Verdict
    seconds: float
    idempotency_key: str
    supersedes_id: int | None
    created_at: datetime


class DecisionBatchRead(BaseModel):
    decisions: list[DecisionRead]


class UndoCreate(BaseModel):
    decision_id: int
    idempotency_key: str
    seconds: float = 0.0


class UndoRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    decision: DecisionRead
    task: LeasedTaskRead


class QueueCountRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    dataset_id: int
    dataset_name: str
    kind: TaskKind
    pending: int
    leased: int
    done: int
    cancelled: int


class HourCountRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    hour: datetime
    decisions: int


class AnnotatorStatsRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    user_id: int
    username: str
    decisions: int
    active_hours: int
    decisions_per_hour: float
    median_seconds: float | None
    by_hour: list[HourCountRead]


class AgreementRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kind: TaskKind
    pairs: int
    agreed: int
    rate: float | None


class QueueStatsRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    since: datetime
    queues: list[QueueCountRead]
    annotators: list[AnnotatorStatsRead]
    median_seconds: float | None
    agreement: list[AgreementRead]


class HistoryEntryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    decision_id: int
    task_id: int
    kind: TaskKind
    verdict: Verdict
    class_id: int | None
    username: str
    seconds: float
    source: str
    reason: str
    score: float | None
    supersedes_id: int | None
    withdrawn: bool
    created_at: datetime


class CurrentVerdictRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sample_id: int
    decision_id: int
    task_id: int
    kind: TaskKind
    verdict: Verdict
    class_id: int | None
    user_id: int
    created_at: datetime


class SampleReviewRead(BaseModel):
    current: CurrentVerdictRead | None
    history: list[HistoryEntryRead]


class ProgressRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    since: datetime
    decisions: int
    by_kind: dict[TaskKind, int]
    median_seconds: float | None
