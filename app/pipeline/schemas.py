"""What the pipeline's read functions return (frozen pydantic models: the API sends them as they
are, the dashboard renders from them) and the API's request bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from app.models import (
    ClassState,
    EventKind,
    JobState,
    RoundKind,
    RoundState,
    SampleStatus,
    Stage,
    TaskKind,
    Verdict,
)
from app.pipeline.config import RecipeChoice
from ml.core.protocol.jobs import JobKind


class _Read(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)


# --- rounds -------------------------------------------------------------------------------------


class RoundJob(_Read):
    job_id: int
    role: str
    kind: JobKind
    state: JobState
    phase: str
    epoch: int
    epochs: int
    error: str | None


class TaskCounts(_Read):
    """A round's review tasks by state (second opinions included)."""

    pending: int = 0
    leased: int = 0
    done: int = 0
    cancelled: int = 0


class RoundSummary(_Read):
    """One round: its stats (counts, estimates, metrics — see the report's docs per kind), its
    jobs, its review tasks, and the sample events it caused per kind (``events``: count by
    event kind; list them with ``samples?round_id=…&event=…``)."""

    id: int
    kind: RoundKind
    number: int
    stage: Stage
    state: RoundState
    phase: str
    source: str
    params: dict[str, Any]
    stats: dict[str, Any]
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    jobs: list[RoundJob]
    tasks: TaskCounts
    events: dict[str, int]


# --- funnel, estimates, classes, training -------------------------------------------------------


class FunnelStep(_Read):
    """One number of the funnel and the sample filter that lists the samples behind it
    (``filter``: query parameters of ``GET /api/pipelines/{dataset_id}/samples``, or of
    :func:`app.pipeline.sample_reports.list_samples`; None for the imported files, which include
    the unusable ones the pipeline never takes: ``GET /api/datasets/{id}/samples`` lists
    those)."""

    key: str
    label: str
    count: int
    filter: dict[str, str] | None


class Funnel(_Read):
    steps: list[FunnelStep]
    statuses: dict[str, int]

    def count(self, key: str) -> int:
        return next(step.count for step in self.steps if step.key == key)


class EstimateRead(_Read):
    """A proportion measured on a random sample (see :mod:`app.pipeline.estimates`), with one-
    sided Clopper–Pearson bounds at ``confidence`` and the counts scaled to ``population``."""

    successes: int
    trials: int
    rate: float | None
    low: float
    high: float
    population: int | None
    count: float | None
    count_low: float | None
    count_high: float | None
    confidence: float


class EstimateRecord(_Read):
    """An estimate and the round whose review produced it. ``what``:

    * ``junk_left``: junk among the unverified samples believed clean (a junk audit); with
      ``overall`` (over everything believed clean) and ``meets_target``;
    * ``flag_precision``: junk among an iteration's strict flags (a flag audit);
    * ``junk_precision``: junk among the flags an iteration queued (or the seed);
    * ``wrongly_rejected``: samples whose given label was right (confirmed) among the rejected
      (a human sample), scaled to the rejected samples not sampled;
    * ``usable_rejected``: the same for samples worth keeping under some label (confirmed or
      relabelled).
    """

    round_id: int
    source: str
    what: str
    estimate: EstimateRead
    overall: dict[str, float | None] | None = None
    meets_target: bool | None = None


class ClassSize(_Read):
    """A class's samples: ``before`` (imported, usable, duplicates left out), ``after`` (the
    final set, by current label), ``sampled`` (draws per epoch of the final recipe's balanced
    sampler over ``after``: max(n, ceil(f × n_max)); equal to ``after`` without balancing),
    ``kept``/``rejected``/``junk`` by current label."""

    class_id: int
    name: str
    state: ClassState
    before: int
    after: int
    sampled: float
    kept: int
    rejected: int
    junk: int
    decision_id: int | None


class DroppedClass(_Read):
    """A class the class review dropped: the samples out of the training set because of it
    (by current label) and who dropped it (their standing drop votes)."""

    class_id: int
    name: str
    samples: int
    dropped_by: list[str]
    decision_id: int | None


class EpochPoint(_Read):
    epoch: int
    values: dict[str, float]


class TrainingRun(_Read):
    """A training job of a round and its per-epoch metrics (the training curve)."""

    round_id: int
    source: str
    job_id: int
    role: str
    kind: JobKind
    state: JobState
    epochs: list[EpochPoint]
    summary: dict[str, Any]


class FinalMetrics(_Read):
    """The final model: where it was evaluated (``human_verified`` samples held out of its
    training, or a ``held_out`` random split), and its metrics (``top1``, ``top5``,
    ``balanced_accuracy``, ``many_shot``/``medium_shot``/``few_shot``, ``per_class_accuracy``)."""

    round_id: int
    job_id: int | None
    state: RoundState
    eval_source: str
    eval_samples: int
    train_samples: int
    classes: int
    teachers: list[int]
    teacher_note: str
    recipe: str
    metrics: dict[str, Any] | None


class NextStepRead(_Read):
    stage: Stage
    kind: RoundKind | None
    reason: str


class QueueRead(_Read):
    kind: TaskKind
    pending: int
    leased: int
    done: int
    cancelled: int


class PipelineStatus(_Read):
    """Where a dataset's cleaning is: everything the dashboard's header and funnel need."""

    dataset_id: int
    dataset_name: str
    stage: Stage
    auto: bool
    note: str
    config: dict[str, Any]
    open_round: RoundSummary | None
    next_step: NextStepRead | None
    rounds: list[RoundSummary]
    queues: list[QueueRead]
    funnel: Funnel
    estimates: list[EstimateRecord]
    decisions_seen_id: int
    created_at: datetime
    waiting: list[str] = Field(
        default_factory=list, description="What the loop waits for now, in words (UTC times)."
    )


# --- samples ------------------------------------------------------------------------------------


class SampleRow(_Read):
    sample_id: int
    path: str
    status: SampleStatus
    given_class_id: int
    label_class_id: int
    human_verdict: Verdict | None
    decision_id: int | None
    junk_score: float | None
    label_rank: int | None
    cl_issue: bool | None


class SamplePage(_Read):
    samples: list[SampleRow]
    next_after_id: int | None


class EventRead(_Read):
    id: int
    round_id: int | None
    source: str | None
    kind: EventKind
    from_status: SampleStatus | None
    to_status: SampleStatus | None
    class_id: int | None
    score: float | None
    job_id: int | None
    decision_id: int | None
    detail: str
    created_at: datetime


class HistoryDecisionRead(_Read):
    """A human decision on the sample (from the review queue), undo rows included."""

    decision_id: int
    task_id: int
    kind: TaskKind
    verdict: Verdict
    class_id: int | None
    username: str
    source: str
    score: float | None
    withdrawn: bool
    created_at: datetime


class TrainingUse(_Read):
    """A training job whose training set held the sample."""

    round_id: int
    source: str
    job_id: int
    role: str
    kind: JobKind


class PredictionRead(_Read):
    """A model's output on the sample: its top classes (server class ids) and probabilities,
    p(given label) and p(junk) when the job reported them."""

    round_id: int
    source: str
    job_id: int
    topk_class_ids: list[int]
    topk_probs: list[float]
    label_prob: float | None
    junk_score: float | None


class SampleHistory(_Read):
    sample_id: int
    path: str
    given_class_id: int
    label_class_id: int
    status: SampleStatus
    model_status: SampleStatus
    human_verdict: Verdict | None
    decision_id: int | None
    junk_score: float | None
    label_rank: int | None
    cl_issue: bool | None
    cl_quality: float | None
    knn_issue: bool | None = None
    knn_agreement: float | None = None
    events: list[EventRead]
    decisions: list[HistoryDecisionRead]
    training: list[TrainingUse]
    predictions: list[PredictionRead]


# --- API bodies ---------------------------------------------------------------------------------

RequestKey = Annotated[
    str | None,
    Field(
        default=None,
        max_length=64,
        description="Send the same key again (a retry) to get the same round back.",
    ),
]


class PipelineCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] = Field(default_factory=dict, description="Keys of PipelineConfig.")
    auto: bool = False


class PipelineUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] | None = Field(
        default=None, description="Keys to change; a key set to null goes back to its default."
    )
    auto: bool | None = None
    stage: Stage | None = Field(default=None, description="Move to this stage (e.g. skip junk).")


class StepCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: RoundKind
    recipe: RecipeChoice | None = None
    seed: int | None = None
    n: Annotated[int | None, Field(ge=0)] = None
    fraction: Annotated[float | None, Field(ge=0.0, le=1.0)] = None
    iteration: Annotated[int | None, Field(ge=1)] = None
    threshold: Annotated[float | None, Field(gt=0.0, le=1.0)] = None
    request_key: RequestKey = None


class AdvanceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_key: RequestKey = None


class AdvanceRead(BaseModel):
    round: RoundSummary | None
    stage: Stage
    reason: str


class ReconcileRead(BaseModel):
    decisions: int
    samples_changed: int
    classes_changed: int
    rounds_advanced: list[str]
    rounds_started: list[str]
    note: str
