"""What the pipeline shows: status, funnel, rounds, estimates, class sizes, training curves,
final metrics, sample lists and one sample's history — each one call for the dashboard, and each
number traceable to samples (the funnel's filters, the rounds' event counts) and decisions.

Read-only: nothing here writes.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from app.jobs import manifests as job_manifests
from app.jobs import service as jobs
from app.models import (
    TRAINABLE,
    ClassState,
    Dataset,
    EventKind,
    Job,
    JobState,
    Pipeline,
    PipelineRound,
    PipelineSample,
    RoundKind,
    SampleStatus,
    Stage,
    Verdict,
    utcnow,
)
from app.pipeline import repository
from app.pipeline.config import parse_config, recipe_document, recipes_for, spec_recipe
from app.pipeline.schemas import (
    ClassSize,
    DecisionRead,
    DroppedClass,
    EpochPoint,
    EstimateRead,
    EstimateRecord,
    EventRead,
    FinalMetrics,
    Funnel,
    FunnelStep,
    NextStepRead,
    PipelineStatus,
    PredictionRead,
    QueueRead,
    RoundJob,
    RoundSummary,
    SampleHistory,
    SamplePage,
    SampleRow,
    TaskCounts,
    TrainingRun,
    TrainingUse,
)
from app.pipeline.service import preview_next
from app.review import repository as review_repository
from app.review import service as review
from ml.core.protocol.jobs import JobKind, ManifestRef

MAX_PAGE = 1_000

#: Round parameters that are bookkeeping, not settings (left out of summaries).
_INTERNAL_PARAMS = frozenset(
    {"phase_jobs", "manifest", "train_manifest", "eval_manifest", "final_counts"}
)
_TRAINING_KINDS = frozenset(
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
        for state, n in review_repository.task_state_counts(
            session, round_.dataset_id, round_.source
        ).items()
    }
    events = repository.round_event_counts(session, round_.id)
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
    statuses = repository.status_counts(session, dataset.id)
    ever = repository.ever_event_counts(session, dataset.id)
    imported = repository.dataset_sample_count(session, dataset.id)
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


def _final_recipe(session: Session, pipeline: Pipeline, dataset: Dataset) -> dict[str, Any]:
    """The final training's recipe: the one the last final round used, else the one it would."""
    final = repository.latest_round(session, pipeline.id, [RoundKind.FINAL_TRAINING], done=False)
    if final is not None:
        for job, role in repository.round_jobs(session, final.id):
            if role == "final":
                return recipe_document(job.spec.get("recipe", {}))
    config = parse_config(pipeline.config)
    choice = recipes_for(config, "final")[0]
    return recipe_document(spec_recipe(choice, config.recipe_overrides))


def balanced_draws(counts: dict[int, int], min_fraction: float | None) -> dict[int, float]:
    """Per class, the draws of one natural-length epoch of the balanced sampler
    (:mod:`ml.sampler`): max(n_c, ceil(f × n_max)), 0 for an empty class; the counts as they
    are without balancing."""
    if min_fraction is None or not counts:
        return {cid: float(n) for cid, n in counts.items()}
    floor = math.ceil(round(min_fraction * max(counts.values()), 9))
    return {cid: float(max(n, floor)) if n > 0 else 0.0 for cid, n in counts.items()}


def class_sizes(session: Session, pipeline: Pipeline, dataset: Dataset) -> list[ClassSize]:
    """Every class, by name: before cleaning, after, and as the balanced sampler draws them."""
    names = repository.class_names(session, dataset.id)
    before = repository.class_counts(
        session,
        dataset.id,
        statuses=set(SampleStatus) - {SampleStatus.DUPLICATE},
        by_given=True,
    )
    after = repository.class_counts(session, dataset.id, statuses=TRAINABLE)
    kept = repository.class_counts(
        session, dataset.id, statuses={SampleStatus.KEPT, SampleStatus.PULLED_BACK}
    )
    rejected = repository.class_counts(session, dataset.id, statuses={SampleStatus.REJECTED})
    junk = repository.class_counts(session, dataset.id, statuses={SampleStatus.JUNK})
    states = repository.pipeline_classes(session, dataset.id)
    balance = _final_recipe(session, pipeline, dataset).get("balance")
    fraction = balance.get("min_fraction", 1 / 3) if isinstance(balance, dict) else None
    final_counts = {
        cid: after.get(cid, 0)
        for cid in names
        if not (cid in states and states[cid].state is ClassState.DROPPED)
    }
    draws = balanced_draws(final_counts, fraction)
    return [
        ClassSize(
            class_id=cid,
            name=name,
            state=states[cid].state if cid in states else ClassState.ACTIVE,
            before=before.get(cid, 0),
            after=after.get(cid, 0),
            sampled=draws.get(cid, 0.0),
            kept=kept.get(cid, 0),
            rejected=rejected.get(cid, 0),
            junk=junk.get(cid, 0),
            decision_id=states[cid].decision_id if cid in states else None,
        )
        for cid, name in sorted(names.items(), key=lambda item: (item[1], item[0]))
    ]


def dropped_classes(session: Session, dataset: Dataset) -> list[DroppedClass]:
    """The classes the class review dropped, by name, with who dropped them (what the
    dashboard offers to restore)."""
    rows = repository.pipeline_classes(session, dataset.id)
    dropped = {cid: row for cid, row in rows.items() if row.state is ClassState.DROPPED}
    if not dropped:
        return []
    names = repository.class_names(session, dataset.id)
    out = repository.class_counts(session, dataset.id, statuses={SampleStatus.DROPPED})
    votes = review_repository.class_votes(session, dataset.id, set(dropped))
    drops = {
        cid: [
            v
            for v in votes.get(cid, [])
            if v.verdict is Verdict.DROP and v.decision_id > row.votes_after_id
        ]
        for cid, row in dropped.items()
    }
    who = review_repository.decision_usernames(
        session, {v.decision_id for found in drops.values() for v in found}
    )
    return sorted(
        (
            DroppedClass(
                class_id=cid,
                name=names.get(cid, f"class {cid}"),
                samples=out.get(cid, 0),
                dropped_by=sorted({who[v.decision_id] for v in drops[cid] if v.decision_id in who}),
                decision_id=row.decision_id,
            )
            for cid, row in dropped.items()
        ),
        key=lambda item: (item.name, item.class_id),
    )


# --- training -----------------------------------------------------------------------------------


def training_runs(session: Session, pipeline: Pipeline) -> list[TrainingRun]:
    """Every training job of the pipeline with its per-epoch metrics, oldest first."""
    result = []
    all_rounds = repository.list_rounds(session, pipeline.id)
    by_round = repository.jobs_of_rounds(session, [r.id for r in all_rounds])
    for round_ in all_rounds:
        for job, role in by_round.get(round_.id, []):
            if job.kind not in _TRAINING_KINDS:
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
        for q in review.queue_counts(session, dataset_id=dataset.id)
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


def waiting_for(
    session: Session, pipeline: Pipeline, dataset: Dataset, *, now: datetime | None = None
) -> list[str]:
    """What the loop waits for now, in words (``thresher simulate --follow`` prints it): the
    open round's unfinished jobs (queued, or on which worker), its open review tasks (leased by
    whom until when, or waiting for an annotator); with no round open, what would start next
    or why nothing does. Times are UTC."""
    now = now or utcnow()
    open_rounds = [r for r in repository.list_rounds(session, pipeline.id) if r.state.is_open]
    lines: list[str] = []
    for round_ in open_rounds:
        phase = set(round_.params.get("phase_jobs", []))
        for job, role in repository.round_jobs(session, round_.id):
            if job.id in phase and not job.state.is_final:
                lines.append(
                    f"waiting for worker job {job.id} ({round_.source}, {role}): " + _job_now(job)
                )
        for hold in review_repository.open_task_holds(session, dataset.id, round_.source, now):
            tasks = plural_tasks(hold.tasks, hold.kind.value)
            if hold.username is None:
                lines.append(f"waiting: {tasks} for an annotator ({round_.source})")
            else:
                until = hold.until.astimezone(UTC).strftime("%H:%M:%S") if hold.until else "?"
                lines.append(
                    f"waiting: {tasks} leased by {hold.username} until {until} UTC "
                    f"({round_.source})"
                )
        if not lines:
            lines.append(f"waiting for {round_.source} to move on ({round_.state.value})")
    if open_rounds:
        return lines
    if pipeline.stage is Stage.DONE:
        return ["nothing: the cleaning is done"]
    step = preview_next(session, pipeline)
    if step is None:
        return [f"waiting for an engineer: {pipeline.note or 'a round failed; retry it'}"]
    what = f"a {step.kind.value} round" if step.kind else f"the {step.stage.value} stage"
    if not pipeline.auto:
        return [f"waiting for an engineer: auto mode is off; next would be {what}"]
    return [f"waiting for the server to start {what}: {step.reason}"]


def _job_now(job: Job) -> str:
    if job.state is JobState.QUEUED:
        return "queued, no worker has taken it yet"
    where = f"{job.state.value} on {job.worker or 'a worker'}"
    if job.epochs:
        return f"{where}, epoch {job.epoch} of {job.epochs}"
    return where


def plural_tasks(count: int, kind: str) -> str:
    return f"{count} {kind} task" + ("" if count == 1 else "s")


# --- samples ------------------------------------------------------------------------------------


def list_samples(
    session: Session,
    dataset: Dataset,
    *,
    status: SampleStatus | None = None,
    final: bool = False,
    class_id: int | None = None,
    round_id: int | None = None,
    event: EventKind | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> SamplePage:
    """Samples by id under a filter (a funnel step's, a round's events…); page with
    ``next_after_id``."""
    limit = max(1, min(limit, MAX_PAGE))
    rows = repository.list_samples(
        session,
        dataset.id,
        status=status,
        statuses=TRAINABLE if final else None,
        class_id=class_id,
        round_id=round_id,
        event=event,
        after_id=after_id,
        limit=limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return SamplePage(
        samples=[SampleRow.model_validate(row._asdict()) for row in rows],
        next_after_id=rows[-1].sample_id if more and rows else None,
    )


def _trained_on(data_dir: Path, ref: ManifestRef, sample_id: int, fold: int | None) -> bool:
    ids = job_manifests.result_sample_ids(data_dir, ref.sha256, None)
    position = int(np.searchsorted(ids, sample_id))
    if position >= ids.shape[0] or int(ids[position]) != sample_id:
        return False
    if fold is None:
        return True
    held = job_manifests.result_sample_ids(data_dir, ref.sha256, fold)
    position = int(np.searchsorted(held, sample_id))
    return not (position < held.shape[0] and int(held[position]) == sample_id)


def sample_history(
    session: Session, pipeline: Pipeline, dataset: Dataset, sample_id: int, *, data_dir: Path
) -> SampleHistory | None:
    """Everything about one sample: its state, the events that put it there, every human
    decision on it, the training jobs that used it and every model output on it."""
    state = session.get(PipelineSample, sample_id)
    if state is None or state.dataset_id != dataset.id:
        return None
    files = repository.sample_files(session, [sample_id])
    all_rounds = {r.id: r for r in repository.list_rounds(session, pipeline.id)}
    events = [
        EventRead(
            id=e.id,
            round_id=e.round_id,
            source=all_rounds[e.round_id].source if e.round_id in all_rounds else None,
            kind=e.kind,
            from_status=e.from_status,
            to_status=e.to_status,
            class_id=e.class_id,
            score=e.score,
            job_id=e.job_id,
            decision_id=e.decision_id,
            detail=e.detail,
            created_at=e.created_at,
        )
        for e in repository.sample_events(session, sample_id)
    ]
    decisions = [
        DecisionRead(
            decision_id=h.decision_id,
            task_id=h.task_id,
            kind=h.kind,
            verdict=h.verdict,
            class_id=h.class_id,
            username=h.username,
            source=h.source,
            score=h.score,
            withdrawn=h.withdrawn,
            created_at=h.created_at,
        )
        for h in review.sample_history(session, sample_id)
    ]
    by_round = repository.jobs_of_rounds(session, list(all_rounds))
    training: list[TrainingUse] = []
    job_round: dict[int, PipelineRound] = {}
    for round_id, round_jobs in by_round.items():
        for job, role in round_jobs:
            job_round[job.id] = all_rounds[round_id]
            if job.kind not in _TRAINING_KINDS or job.state is not JobState.SUCCEEDED:
                continue
            spec = job.spec
            ref = ManifestRef.model_validate(spec["train"])
            fold = spec.get("fold") if job.kind is JobKind.TRAIN_FOLD else None
            try:
                used = _trained_on(data_dir, ref, sample_id, fold)
            except job_manifests.ManifestNotFound:
                used = False
            if used:
                training.append(
                    TrainingUse(
                        round_id=round_id,
                        source=all_rounds[round_id].source,
                        job_id=job.id,
                        role=role,
                        kind=job.kind,
                    )
                )
    outputs = repository.job_results_of_sample(session, sample_id, job_round)
    predictions = []
    for job_id, row in sorted(outputs.items()):
        round_ = job_round[job_id]
        ids = np.frombuffer(row.topk_class_id, "<i4").tolist() if row.topk_class_id else []
        probs = np.frombuffer(row.topk_prob, "<f4").tolist() if row.topk_prob else []
        label_prob = row.label_prob
        predictions.append(
            PredictionRead(
                round_id=round_.id,
                source=round_.source,
                job_id=job_id,
                topk_class_ids=[int(c) for c in ids],
                topk_probs=[float(p) for p in probs],
                label_prob=None
                if label_prob is None or math.isnan(label_prob)
                else float(label_prob),
                junk_score=row.junk_score,
            )
        )
    training.sort(key=lambda use: use.job_id)
    return SampleHistory(
        sample_id=sample_id,
        path=files[sample_id][0],
        given_class_id=state.given_class_id,
        label_class_id=state.label_class_id,
        status=state.status,
        model_status=state.model_status,
        human_verdict=state.human_verdict,
        decision_id=state.decision_id,
        junk_score=state.junk_score,
        label_rank=state.label_rank,
        cl_issue=state.cl_issue,
        cl_quality=state.cl_quality,
        knn_issue=state.knn_issue,
        knn_agreement=state.knn_agreement,
        events=events,
        decisions=decisions,
        training=training,
        predictions=predictions,
    )


__all__ = [
    "balanced_draws",
    "class_sizes",
    "estimates",
    "final_metrics",
    "funnel",
    "list_samples",
    "pipeline_of",
    "round_summary",
    "rounds",
    "sample_history",
    "status",
    "training_runs",
]
