"""The samples behind the dashboard's numbers (:func:`list_samples`, by a funnel step's or a
round's filter) and one sample's whole history: its state, the events that put it there, the
human decisions on it, the training jobs that used it and every model output on it. Read-only."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from app.jobs import manifests as job_manifests
from app.models import (
    TRAINABLE,
    Dataset,
    EventKind,
    Job,
    JobState,
    Pipeline,
    PipelineRound,
    PipelineSample,
    SampleStatus,
)
from app.pipeline import event_repository, repository, result_repository, sample_repository
from app.pipeline.reports import TRAINING_KINDS
from app.pipeline.schemas import (
    EventRead,
    HistoryDecisionRead,
    PredictionRead,
    SampleHistory,
    SamplePage,
    SampleRow,
    TrainingUse,
)
from app.review.service import verdicts as verdict_service
from ml.core.protocol.jobs import JobKind, ManifestRef

MAX_PAGE = 1_000


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
    rows = event_repository.list_samples(
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
    files = sample_repository.sample_files(session, [sample_id])
    all_rounds = {r.id: r for r in repository.list_rounds(session, pipeline.id)}
    by_round = repository.jobs_of_rounds(session, list(all_rounds))
    job_round = {
        job.id: all_rounds[round_id]
        for round_id, round_jobs in by_round.items()
        for job, _ in round_jobs
    }
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
        events=_events(session, sample_id, all_rounds),
        decisions=_decisions(session, sample_id),
        training=_training_uses(by_round, all_rounds, sample_id, data_dir),
        predictions=_predictions(session, sample_id, job_round),
    )


def _events(
    session: Session, sample_id: int, all_rounds: dict[int, PipelineRound]
) -> list[EventRead]:
    return [
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
        for e in event_repository.sample_events(session, sample_id)
    ]


def _decisions(session: Session, sample_id: int) -> list[HistoryDecisionRead]:
    return [
        HistoryDecisionRead(
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
        for h in verdict_service.sample_history(session, sample_id)
    ]


def _training_uses(
    by_round: dict[int, list[tuple[Job, str]]],
    all_rounds: dict[int, PipelineRound],
    sample_id: int,
    data_dir: Path,
) -> list[TrainingUse]:
    """The succeeded training jobs that trained on the sample (a fold job that held it out did
    not), by job id."""
    training: list[TrainingUse] = []
    for round_id, round_jobs in by_round.items():
        for job, role in round_jobs:
            if job.kind not in TRAINING_KINDS or job.state is not JobState.SUCCEEDED:
                continue
            ref = ManifestRef.model_validate(job.spec["train"])
            fold = job.spec.get("fold") if job.kind is JobKind.TRAIN_FOLD else None
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
    training.sort(key=lambda use: use.job_id)
    return training


def _predictions(
    session: Session, sample_id: int, job_round: dict[int, PipelineRound]
) -> list[PredictionRead]:
    """Every model output on the sample, by job id."""
    outputs = result_repository.job_results_of_sample(session, sample_id, job_round)
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
    return predictions
