"""What the pipeline shows: status, funnel, rounds, estimates, training curves and final
metrics — each one call for the dashboard, and each number traceable to samples (the funnel's
filters, the rounds' event counts) and decisions. Class sizes: :mod:`~app.pipeline.class_reports`;
the samples behind a number and one sample's history: :mod:`~app.pipeline.sample_reports`; what
the loop waits for: :mod:`~app.pipeline.waiting`.

Read-only: nothing here writes.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.jobs import service as jobs
from app.models import (
    TRAINABLE,
    Dataset,
    EventKind,
    Pipeline,
    PipelineRound,
    RoundKind,
    SampleStatus,
)
from app.pipeline import event_repository, repository, sample_repository
from app.pipeline.config import parse_config
from app.pipeline.schemas import (
    EpochPoint,
    EstimateRead,
    EstimateRecord,
    FinalMetrics,
    Funnel,
    FunnelStep,
    NextStepRead,
    PipelineStatus,
    QueueRead,
    RoundJob,
    RoundSummary,
    TaskCounts,
    TrainingRun,
)
from app.pipeline.service import preview_next
from app.pipeline.waiting import waiting_for
from app.review.repository import tasks as task_repository
from app.review.service import stats as stats_service
from ml.core.protocol.jobs import JobKind

#: Round parameters that are bookkeeping, not settings (left out of summaries).
_INTERNAL_PARAMS = frozenset(
    {"phase_jobs", "manifest", "train_manifest", "eval_manifest", "final_counts"}
)
#: The job kinds that train a model (their epochs are the training curves).
TRAINING_KINDS = frozenset(
    {
        JobKind.TRAIN_JUNK,
        JobKind.TRAIN_FOLD,
        JobKind.TRAIN_PREDICT,
        JobKind.TRAIN_FINAL,
    }
)


# --- rounds -------------------------------------------------------------------------------------


def _counts(session: Session, round_: PipelineRound) -> tuple[TaskCounts, dict[str, int]]:
    """A round's tasks by state and sample events by kind: as kept when it ended, counted now
    while it is open (or its review was finished early: its tasks are still being decided)."""
    kept = round_.params.get("final_counts")
    if kept and not round_.state.is_open and not round_.stats.get("finished_early"):
        return TaskCounts(**kept["tasks"]), dict(sorted(kept["events"].items()))
    tasks = {
        state.value: n
        for state, n in task_repository.task_state_counts(
            session, round_.dataset_id, round_.source
        ).items()
    }
    events = event_repository.round_event_counts(session, round_.id)
    return TaskCounts(**tasks), {kind.value: n for kind, n in sorted(events.items())}


def _summaries(session: Session, rounds: list[PipelineRound]) -> list[RoundSummary]:
    if not rounds:
        return []
    round_jobs = repository.jobs_of_rounds(session, [r.id for r in rounds])
    result = []
    for round_ in rounds:
        tasks, events = _counts(session, round_)
        result.append(
            RoundSummary(
                id=round_.id,
                kind=round_.kind,
                number=round_.number,
                stage=round_.stage,
                state=round_.state,
                phase=round_.phase,
                source=round_.source,
                params={k: v for k, v in round_.params.items() if k not in _INTERNAL_PARAMS},
                stats=dict(round_.stats),
                error=round_.error,
                created_at=round_.created_at,
                finished_at=round_.finished_at,
                jobs=[
                    RoundJob(
                        job_id=job.id,
                        role=role,
                        kind=job.kind,
                        state=job.state,
                        phase=job.phase,
                        epoch=job.epoch,
                        epochs=job.epochs,
                        error=job.error,
                    )
                    for job, role in round_jobs.get(round_.id, [])
                ],
                tasks=tasks,
                events=events,
            )
        )
    return result


def rounds(session: Session, pipeline: Pipeline) -> list[RoundSummary]:
    """Every round, oldest first, with its per-round counts."""
    return _summaries(session, repository.list_rounds(session, pipeline.id))


def round_summary(session: Session, round_: PipelineRound) -> RoundSummary:
    return _summaries(session, [round_])[0]


# --- funnel -------------------------------------------------------------------------------------


def funnel(session: Session, dataset: Dataset) -> Funnel:
    """From the imported files to the final set. Each step's ``filter`` lists its samples."""
    statuses = sample_repository.status_counts(session, dataset.id)
    ever = event_repository.ever_event_counts(session, dataset.id)
    imported = sample_repository.dataset_sample_count(session, dataset.id)
    in_pipeline = sum(statuses.values())

    def status(value: SampleStatus) -> int:
        return statuses.get(value, 0)

    def by_status(value: SampleStatus, label: str) -> FunnelStep:
        return FunnelStep(
            key=value.value, label=label, count=status(value), filter={"status": value.value}
        )

    steps = [
        FunnelStep(key="imported", label="imported files", count=imported, filter=None),
        FunnelStep(key="usable", label="usable images", count=in_pipeline, filter={}),
        FunnelStep(
            key="duplicates",
            label="duplicates left out",
            count=status(SampleStatus.DUPLICATE),
            filter={"status": "duplicate"},
        ),
        by_status(SampleStatus.JUNK, "junk removed"),
        FunnelStep(
            key="junk_bulk",
            label="junk accepted in bulk",
            count=ever.get(EventKind.BULK_JUNK, 0),
            filter={"event": "bulk_junk"},
        ),
        by_status(SampleStatus.KEPT, "kept by the top-k rule"),
        by_status(SampleStatus.REJECTED, "rejected"),
        by_status(SampleStatus.PULLED_BACK, "pulled back"),
        by_status(SampleStatus.CONFIRMED, "human-confirmed"),
        by_status(SampleStatus.RELABELLED, "relabelled by humans"),
        by_status(SampleStatus.DROPPED, "in dropped classes"),
        by_status(SampleStatus.CANDIDATE, "not judged by a label rule"),
        FunnelStep(
            key="final",
            label="final set",
            count=sum(status(s) for s in TRAINABLE),
            filter={"final": "1"},
        ),
    ]
    return Funnel(steps=steps, statuses={s.value: n for s, n in sorted(statuses.items())})


# --- estimates ----------------------------------------------------------------------------------


def estimates(session: Session, pipeline: Pipeline) -> list[EstimateRecord]:
    """Every estimate a finished review produced, oldest first (see :class:`EstimateRecord`)."""
    result = []
    for round_ in repository.list_rounds(session, pipeline.id):
        stats = round_.stats
        if round_.kind is RoundKind.JUNK_AUDIT and "estimate" in stats:
            result.append(
                EstimateRecord(
                    round_id=round_.id,
                    source=round_.source,
                    what="junk_left",
                    estimate=EstimateRead.model_validate(stats["estimate"]),
                    overall=stats.get("overall"),
                    meets_target=stats.get("meets_target"),
                )
            )
        elif round_.kind is RoundKind.FLAG_AUDIT and "precision" in stats:
            result.append(
                EstimateRecord(
                    round_id=round_.id,
                    source=round_.source,
                    what="flag_precision",
                    estimate=EstimateRead.model_validate(stats["precision"]),
                )
            )
        elif (
            round_.kind in (RoundKind.JUNK_SEED, RoundKind.JUNK_ITERATION) and "precision" in stats
        ):
            result.append(
                EstimateRecord(
                    round_id=round_.id,
                    source=round_.source,
                    what="junk_precision",
                    estimate=EstimateRead.model_validate(stats["precision"]),
                )
            )
        elif round_.kind is RoundKind.HUMAN_SAMPLE and "estimate" in stats:
            for what, key in (("wrongly_rejected", "estimate"), ("usable_rejected", "usable")):
                if key in stats:
                    result.append(
                        EstimateRecord(
                            round_id=round_.id,
                            source=round_.source,
                            what=what,
                            estimate=EstimateRead.model_validate(stats[key]),
                        )
                    )
    return result


# --- classes ------------------------------------------------------------------------------------


# --- training -----------------------------------------------------------------------------------


def training_runs(session: Session, pipeline: Pipeline) -> list[TrainingRun]:
    """Every training job of the pipeline with its per-epoch metrics, oldest first."""
    result = []
    all_rounds = repository.list_rounds(session, pipeline.id)
    by_round = repository.jobs_of_rounds(session, [r.id for r in all_rounds])
    for round_ in all_rounds:
        for job, role in by_round.get(round_.id, []):
            if job.kind not in TRAINING_KINDS:
                continue
            detail = jobs.job_detail(session, job)
            summary = {k: v for k, v in (job.summary or {}).items() if k != "history"}
            result.append(
                TrainingRun(
                    round_id=round_.id,
                    source=round_.source,
                    job_id=job.id,
                    role=role,
                    kind=job.kind,
                    state=job.state,
                    epochs=[EpochPoint(epoch=m.epoch, values=m.values) for m in detail.metrics],
                    summary=summary,
                )
            )
    return result


def final_metrics(session: Session, pipeline: Pipeline) -> FinalMetrics | None:
    """The latest final training (finished or not), None before there is one."""
    final = repository.latest_round(session, pipeline.id, [RoundKind.FINAL_TRAINING], done=False)
    if final is None:
        return None
    stats = final.stats
    job_ids = [job.id for job, role in repository.round_jobs(session, final.id) if role == "final"]
    return FinalMetrics(
        round_id=final.id,
        job_id=job_ids[0] if job_ids else None,
        state=final.state,
        eval_source=str(stats.get("eval_source", "")),
        eval_samples=int(stats.get("eval", 0)),
        train_samples=int(stats.get("train", 0)),
        classes=int(stats.get("classes", 0)),
        teachers=list(stats.get("teachers", [])),
        teacher_note=str(stats.get("teacher_note", "")),
        recipe=str(stats.get("recipe", "")),
        metrics=stats.get("metrics"),
    )


# --- status -------------------------------------------------------------------------------------


def pipeline_of(session: Session, dataset: Dataset) -> Pipeline | None:
    """The dataset's pipeline, None before one is created (the dashboard says so)."""
    return repository.get_pipeline(session, dataset_id=dataset.id)


def status(session: Session, pipeline: Pipeline, dataset: Dataset) -> PipelineStatus:
    """Where a dataset's cleaning is (one call for the dashboard's header, funnel, rounds,
    queues and estimates)."""
    all_rounds = rounds(session, pipeline)
    open_rounds = [r for r in all_rounds if r.state.is_open]
    step = preview_next(session, pipeline)
    queues = [
        QueueRead(
            kind=q.kind, pending=q.pending, leased=q.leased, done=q.done, cancelled=q.cancelled
        )
        for q in stats_service.queue_counts(session, dataset_id=dataset.id)
    ]
    return PipelineStatus(
        dataset_id=dataset.id,
        dataset_name=dataset.name,
        stage=pipeline.stage,
        auto=pipeline.auto,
        note=pipeline.note,
        config=parse_config(pipeline.config).model_dump(mode="json"),
        open_round=open_rounds[-1] if open_rounds else None,
        next_step=NextStepRead(stage=step.stage, kind=step.kind, reason=step.reason)
        if step
        else None,
        rounds=all_rounds,
        queues=queues,
        funnel=funnel(session, dataset),
        estimates=estimates(session, pipeline),
        decisions_seen_id=pipeline.decisions_seen_id,
        created_at=pipeline.created_at,
        waiting=waiting_for(session, pipeline, dataset),
    )


__all__ = [
    "estimates",
    "final_metrics",
    "funnel",
    "pipeline_of",
    "round_summary",
    "rounds",
    "status",
    "training_runs",
]
