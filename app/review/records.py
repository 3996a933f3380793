"""What the review services take and return: frozen dataclasses (DecisionRecord: a NamedTuple),
free of HTTP and of the ORM.

The API's request and response bodies are in :mod:`app.review.schemas`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from app.models import TaskKind, Verdict

# --- service inputs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Suggestion:
    """One of the model's top classes for a sample; ``probability`` is in [0, 1]."""

    class_id: int
    probability: float


@dataclass(frozen=True)
class TaskItem:
    """One task to queue: a sample (every kind but class_check) or a class (class_check)."""

    sample_id: int | None = None
    class_id: int | None = None
    priority: float = 0.0
    score: float | None = None
    reason: str | None = None  # falls back to the batch's reason
    suggestions: tuple[Suggestion, ...] = ()


@dataclass(frozen=True)
class DecisionInput:
    """A verdict on a leased task. ``lease_version`` is the fencing token the lease handed out;
    ``class_id`` is the new class of a relabel (and only of a relabel)."""

    task_id: int
    lease_version: int
    verdict: Verdict
    idempotency_key: str
    seconds: float = 0.0
    class_id: int | None = None


# --- service results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatedTasks:
    """``created`` new tasks; ``skipped`` items already queued from the same source."""

    created: int
    skipped: int
    task_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class LeasedTask:
    """A task held by the caller until ``lease_expires_at``. ``given_class_id`` is the sample's
    class as imported (None for class_check)."""

    id: int
    dataset_id: int
    kind: TaskKind
    sample_id: int | None
    sample_sha256: str | None  # its file's content, for the image URL (None: an import issue)
    class_id: int | None
    given_class_id: int | None
    priority: float
    score: float | None
    source: str
    reason: str
    suggestions: tuple[Suggestion, ...]
    lease_version: int
    lease_expires_at: datetime


@dataclass(frozen=True)
class LeaseRenewal:
    """What a heartbeat kept: the tasks still the caller's, now until ``lease_expires_at``,
    and those it lost (decided, cancelled, or leased to someone else since)."""

    renewed: list[int]
    lost: list[int]
    lease_expires_at: datetime


class DecisionRecord(NamedTuple):
    """A stored decision. A NamedTuple: the queries build it straight from a row of
    ``DECISION_COLUMNS`` (:mod:`app.review.repository.tables`), which lists these fields in this
    order."""

    id: int
    task_id: int
    kind: TaskKind
    sample_id: int | None
    class_id: int | None
    user_id: int
    verdict: Verdict
    seconds: float
    idempotency_key: str
    supersedes_id: int | None
    created_at: datetime


@dataclass(frozen=True)
class UndoResult:
    """The undo decision, and the task, reopened and leased again to the same annotator."""

    decision: DecisionRecord
    task: LeasedTask


@dataclass(frozen=True)
class CurrentVerdict:
    """A sample's current human verdict: its latest decision that is not withdrawn by an undo.
    ``class_id`` is the confirmed class of an accept or relabel."""

    sample_id: int
    decision_id: int
    task_id: int
    kind: TaskKind
    verdict: Verdict
    class_id: int | None
    user_id: int
    created_at: datetime


@dataclass(frozen=True)
class HistoryEntry:
    """One decision on a sample, with the task that asked for it. ``withdrawn`` when a later
    undo superseded it."""

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


@dataclass(frozen=True)
class QueueCount:
    """Tasks of one kind in one dataset by state; expired leases count as pending."""

    dataset_id: int
    dataset_name: str
    kind: TaskKind
    pending: int
    leased: int
    done: int
    cancelled: int


@dataclass(frozen=True)
class HourCount:
    hour: datetime  # start of the hour, UTC
    decisions: int


@dataclass(frozen=True)
class AnnotatorStats:
    """An annotator's decisions in the stats window (undo rows not counted)."""

    user_id: int
    username: str
    decisions: int
    active_hours: int
    decisions_per_hour: float  # per hour in which they decided anything
    median_seconds: float | None
    by_hour: list[HourCount]


@dataclass(frozen=True)
class Agreement:
    """Tasks decided twice (the original and its second opinion, both decided): ``pairs`` in
    all, ``agreed`` with the same verdict (and the same class, for relabels)."""

    kind: TaskKind
    pairs: int
    agreed: int

    @property
    def rate(self) -> float | None:
        return self.agreed / self.pairs if self.pairs else None


@dataclass(frozen=True)
class QueueStats:
    since: datetime
    queues: list[QueueCount]
    annotators: list[AnnotatorStats]
    median_seconds: float | None
    agreement: list[Agreement]


@dataclass(frozen=True)
class QueueProgress:
    """One annotator's decisions since ``since`` (undo rows not counted)."""

    since: datetime
    decisions: int
    by_kind: dict[TaskKind, int]
    median_seconds: float | None


class SampleImage(NamedTuple):
    """A sample a review page shows: its id and its file's SHA-256, which its image URL names
    (None: an import issue)."""

    id: int
    sha256: str | None


@dataclass(frozen=True)
class ReferenceSet:
    """Samples showing a class, human-confirmed ones first."""

    class_id: int
    samples: list[SampleImage]

    @property
    def sample_ids(self) -> list[int]:
        return [sample.id for sample in self.samples]


@dataclass(frozen=True)
class ReviewBatch:
    """Leased tasks with what their pages show: class names, reference samples per class
    (label_check), and a class's size and some of its samples (class_check)."""

    tasks: list[LeasedTask]
    class_names: dict[int, str] = field(default_factory=dict)
    references: dict[int, ReferenceSet] = field(default_factory=dict)
    class_sizes: dict[int, int] = field(default_factory=dict)
    class_samples: dict[int, list[SampleImage]] = field(default_factory=dict)
