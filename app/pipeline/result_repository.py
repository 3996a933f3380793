"""Queries of the model outputs stored per sample: the job its latest prediction came from,
and each job's top-k classes, probability of the given label and junk score."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator
from typing import Any

from sqlalchemy import (
    select,
)
from sqlalchemy.orm import Session

from app.db import chunks
from app.models import JobResult, PipelineSample


def pred_jobs(session: Session, sample_ids: Collection[int]) -> dict[int, int]:
    """The job whose prediction of each sample is the latest (for suggestions)."""
    result: dict[int, int] = {}
    for part in chunks(sorted(sample_ids)):
        rows = session.execute(
            select(PipelineSample.sample_id, PipelineSample.pred_job_id).where(
                PipelineSample.sample_id.in_(part), PipelineSample.pred_job_id.is_not(None)
            )
        )
        result.update({int(sid): int(job_id or 0) for sid, job_id in rows})
    return result


def _result_rows(
    session: Session, pairs: Collection[tuple[int, int]], *columns: Any
) -> Iterator[tuple[Any, ...]]:
    """``(sample_id, *columns)`` of the stored results of each (job id, sample id)."""
    by_job: dict[int, list[int]] = {}
    for job_id, sample_id in pairs:
        by_job.setdefault(job_id, []).append(sample_id)
    for job_id, sample_ids in by_job.items():
        for part in chunks(sorted(sample_ids)):
            rows = session.execute(
                select(JobResult.sample_id, *columns).where(
                    JobResult.job_id == job_id, JobResult.sample_id.in_(part)
                )
            )
            yield from (tuple(row) for row in rows)


def topk_of(session: Session, pairs: Collection[tuple[int, int]]) -> dict[int, tuple[bytes, bytes]]:
    """The stored top-k (class ids, probabilities; little-endian int32/float32 bytes) of each
    (job id, sample id), by sample id."""
    return {
        int(sample_id): (bytes(ids), bytes(probs))
        for sample_id, ids, probs in _result_rows(
            session, pairs, JobResult.topk_class_id, JobResult.topk_prob
        )
        if ids is not None and probs is not None
    }


def latest_label_probs(session: Session, sample_ids: Collection[int]) -> dict[int, float]:
    """Each sample's latest prediction's probability of the label it was given to the model
    (from the job ``pred_job_id`` names), where the job reported one."""
    pairs = [(job_id, sample_id) for sample_id, job_id in pred_jobs(session, sample_ids).items()]
    return {
        int(sample_id): float(prob)
        for sample_id, prob in _result_rows(session, pairs, JobResult.label_prob)
        if prob is not None and math.isfinite(prob)
    }


def job_results_of_sample(
    session: Session, sample_id: int, job_ids: Collection[int]
) -> dict[int, JobResult]:
    if not job_ids:
        return {}
    query = select(JobResult).where(
        JobResult.sample_id == sample_id, JobResult.job_id.in_(list(job_ids))
    )
    return {row.job_id: row for row in session.scalars(query)}
