"""The round being started or advanced (:class:`RoundContext`) and what every kind of round
does through it: the parameters a step may be given, applying a model rule's verdicts with
their events, queueing review tasks, random draws, and ending a round.

Every function here runs inside the caller's transaction with the pipeline row locked (see
:mod:`app.pipeline.stages.lifecycle`).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy.orm import Session

from app.errors import Conflict
from app.logging import get_logger
from app.models import (
    TRAINABLE,
    Dataset,
    EventKind,
    Pipeline,
    PipelineRound,
    RoundKind,
    RoundState,
    SampleStatus,
    TaskKind,
    User,
    Verdict,
    utcnow,
)
from app.pipeline import event_repository, sample_repository
from app.pipeline.config import PipelineConfig, PipelineEnv, RecipeChoice, parse_config
from app.pipeline.rules import HumanVerdict, resolve_status
from app.pipeline.sample_repository import SampleState
from app.review.records import TaskItem
from app.review.repository import tasks as task_repository
from app.review.service import tasks as task_service
from app.review.service import verdicts as verdict_service

log = get_logger(__name__)

JUNK_KINDS = (TaskKind.JUNK_CHECK, TaskKind.JUNK_AUDIT)
#: Statuses of samples believed not to be junk (what a junk audit draws from).
NOT_JUNK = frozenset(SampleStatus) - {SampleStatus.JUNK, SampleStatus.DUPLICATE}
#: The cross-validation set: every sample not junk, not a duplicate, not of a dropped class.
LABEL_POOL = TRAINABLE | {SampleStatus.REJECTED}
#: The score histograms' bins: 0.0–0.1, …, 0.9–1.0.
HISTOGRAM_BINS = 10


class StepRefused(Conflict):
    """A step cannot start in the pipeline's current state (the message says why)."""

    code = "step_refused"


@dataclass(frozen=True)
class StepParams:
    """What a step may be told besides the config: a recipe (pull-back, final), a seed for its
    random draws, a sample size ``n`` (audits, seed), a ``fraction`` (human sample), the junk
    ``iteration`` a flag audit or bulk acceptance is about, a ``threshold`` (junk iteration,
    flag audit)."""

    recipe: RecipeChoice | None = None
    seed: int | None = None
    n: int | None = None
    fraction: float | None = None
    iteration: int | None = None
    threshold: float | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name in ("seed", "n", "fraction", "iteration", "threshold"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.recipe is not None:
            data["recipe"] = self.recipe.model_dump(mode="json")
        return data


@dataclass
class RoundContext:
    """One round being started or advanced."""

    session: Session
    pipeline: Pipeline
    dataset: Dataset
    round: PipelineRound
    config: PipelineConfig
    env: PipelineEnv
    user: User | None
    now: datetime
    params: StepParams = field(default_factory=StepParams)

    @property
    def seed(self) -> int:
        """The seed of this round's random draws: the step's, else config seed + round id."""
        return (
            self.params.seed if self.params.seed is not None else self.config.seed + self.round.id
        )

    def stats(self, **values: Any) -> None:
        self.round.stats = {**self.round.stats, **values}


def round_context(
    session: Session,
    *,
    pipeline: Pipeline,
    dataset: Dataset,
    round_: PipelineRound,
    env: PipelineEnv,
    user: User | None = None,
    now: datetime | None = None,
) -> RoundContext:
    """The context of ``round_``, with the pipeline's config and the step's parameters
    parsed."""
    params = round_.params.get("step", {})
    return RoundContext(
        session=session,
        pipeline=pipeline,
        dataset=dataset,
        round=round_,
        config=parse_config(pipeline.config),
        env=env,
        user=user,
        now=now or utcnow(),
        params=StepParams(
            recipe=RecipeChoice.model_validate(params["recipe"]) if "recipe" in params else None,
            **{k: v for k, v in params.items() if k != "recipe"},
        ),
    )


def round_source(kind: RoundKind, number: int) -> str:
    return f"{kind.value.replace('_', ' ')} {number}"


# --- what every kind does -------------------------------------------------------------------


class ModelChange(NamedTuple):
    """A model rule's verdict on one sample (``columns``: other state columns to set)."""

    model_status: SampleStatus
    event: EventKind | None
    score: float | None = None
    job_id: int | None = None
    detail: str = ""
    columns: dict[str, Any] = {}  # noqa: RUF012 (never mutated)


def human_of(state: SampleState) -> HumanVerdict | None:
    if state.decision_id is None or state.human_verdict is None:
        return None
    class_id = state.label_class_id if state.human_verdict is Verdict.RELABEL else None
    return HumanVerdict(state.decision_id, state.human_verdict, class_id)


def apply_model_changes(
    ctx: RoundContext, changes: dict[int, ModelChange]
) -> Counter[SampleStatus]:
    """Sets ``model_status`` (and the resolved status) of samples, with an event for each change
    that names one. Returns the new statuses counted."""
    session = ctx.session
    states = sample_repository.sample_states(session, changes)
    dropped = sample_repository.dropped_class_ids(session, ctx.dataset.id)
    updates: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    counts: Counter[SampleStatus] = Counter()
    for sample_id, change in changes.items():
        state = states.get(sample_id)
        if state is None:
            continue
        status, label = resolve_status(
            change.model_status, human_of(state), state.given_class_id, dropped
        )
        counts[status] += 1
        updates.append(
            {
                "sample_id": sample_id,
                "model_status": change.model_status,
                "status": status,
                "label_class_id": label,
                "round_id": ctx.round.id,
                "updated_at": ctx.now,
                **change.columns,
            }
        )
        if change.event is not None:
            events.append(
                event_repository.event_row(
                    ctx.dataset.id,
                    kind=change.event,
                    now=ctx.now,
                    round_id=ctx.round.id,
                    sample_id=sample_id,
                    class_id=label,
                    from_status=state.status,
                    to_status=status,
                    score=change.score,
                    job_id=change.job_id,
                    detail=change.detail,
                )
            )
    sample_repository.update_samples(session, updates)
    event_repository.insert_events(session, events)
    return counts


def queue_tasks(
    ctx: RoundContext, kind: TaskKind, items: Sequence[TaskItem], *, reason: str
) -> int:
    """Queues review tasks under this round's source, with a ``queued`` event per sample."""
    if not items:
        return 0
    created = task_service.create_tasks(
        ctx.session,
        dataset=ctx.dataset,
        kind=kind,
        items=items,
        source=ctx.round.source,
        reason=reason,
        created_by=ctx.user,
    )
    events = [
        event_repository.event_row(
            ctx.dataset.id,
            kind=EventKind.QUEUED,
            now=ctx.now,
            round_id=ctx.round.id,
            sample_id=item.sample_id,
            class_id=item.class_id if item.sample_id is None else None,
            score=item.score,
            detail=f"{kind.value}: {item.reason or reason}",
        )
        for item in items
    ]
    event_repository.insert_events(ctx.session, events)
    return created.created


def draw(population: Sequence[int], n: int, seed: int) -> list[int]:
    """``n`` of ``population`` at random (seeded), sorted; all of it when ``n`` is larger."""
    if n >= len(population):
        return sorted(population)
    return sorted(random.Random(seed).sample(list(population), n))


def histogram(scores: Sequence[float] | np.ndarray[Any, Any]) -> list[int]:
    values = np.asarray(scores, dtype=np.float64)
    counts, _ = np.histogram(values, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    return [int(c) for c in counts]


def set_phase(ctx: RoundContext, phase: str, job_ids: Sequence[int]) -> None:
    ctx.round.phase = phase
    ctx.round.params = {**ctx.round.params, "phase_jobs": list(job_ids)}


def finish(ctx: RoundContext, state: RoundState = RoundState.DONE) -> None:
    """Ends the round (or sets it open again) and, when it ends, keeps its final counts of
    sample events and tasks, so reports need not count them again."""
    ctx.round.state = state
    ctx.round.phase = ""
    if not state.is_open:
        ctx.round.finished_at = ctx.now
        tasks = task_repository.task_state_counts(ctx.session, ctx.dataset.id, ctx.round.source)
        ctx.round.params = {
            **ctx.round.params,
            "final_counts": {
                "events": {
                    kind.value: n
                    for kind, n in event_repository.round_event_counts(
                        ctx.session, ctx.round.id
                    ).items()
                },
                "tasks": {task_state.value: n for task_state, n in tasks.items()},
            },
        }
    log.info(
        "pipeline.round.state",
        dataset_id=ctx.dataset.id,
        round=ctx.round.source,
        state=state.value,
    )


def review_or_done(ctx: RoundContext, queued: int) -> None:
    if queued:
        ctx.round.state = RoundState.REVIEWING
        ctx.round.phase = ""
    else:
        finish(ctx)


def round_verdicts(ctx: RoundContext, kind: TaskKind) -> tuple[list[int], dict[int, HumanVerdict]]:
    """The samples this round queued and the standing verdict of each given on one of its tasks
    (a sample decided on another round's task since is left out)."""
    tasks = task_repository.tasks_of_source(ctx.session, ctx.dataset.id, ctx.round.source)
    task_ids = {t.id for t in tasks}
    samples = [t.sample_id for t in tasks if t.sample_id is not None]
    current = verdict_service.current_verdicts(ctx.session, sample_ids=samples, kinds=[kind])
    verdicts = {
        sid: HumanVerdict(v.decision_id, v.verdict, v.class_id)
        for sid, v in current.items()
        if v.task_id in task_ids
    }
    return samples, verdicts


def classes_of(states: Sequence[SampleState]) -> list[int]:
    return sorted({s.label_class_id for s in states})
