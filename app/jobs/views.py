"""View models for the job pages: every number formatted and every chart coordinate computed
here (with :mod:`app.web.metric_chart`), so the templates only place what they are given."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.jobs.schemas import JobDetail
from app.models import Job, JobState
from app.web.formatting import Fact, Moment, byte_size, duration, format_value, moment, number
from app.web.metric_chart import MetricChart, metric_chart, metric_names
from app.web.urls import artifact_url, job_live_url, job_table_url, job_url, jobs_url

PAGE_SIZE = 100

STATE_TONES = {
    JobState.QUEUED: "",
    JobState.LEASED: "running",
    JobState.RUNNING: "running",
    JobState.SUCCEEDED: "ok",
    JobState.FAILED: "bad",
    JobState.CANCELLED: "warn",
}


# --- the list -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StateFilter:
    label: str
    count: str
    url: str
    active: bool


@dataclass(frozen=True)
class JobRow:
    id: int
    url: str
    kind: str
    state: str
    tone: str
    progress: str
    worker: str
    attempts: str
    created: Moment


@dataclass(frozen=True)
class JobListView:
    rows: list[JobRow]
    filters: list[StateFilter]
    active_count: int
    poll_url: str | None
    next_url: str | None


def progress_text(job: Job) -> str:
    if job.state is JobState.QUEUED:
        if job.attempts and job.error:
            return f"waiting to retry (attempt {job.attempts + 1} of {job.max_attempts})"
        return "waiting for a worker"
    if job.state is JobState.LEASED:
        return "starting"
    if job.state is JobState.RUNNING:
        parts = [job.phase or "running"]
        if job.epochs:
            parts.append(f"epoch {job.epoch} of {job.epochs}")
        if job.steps:
            parts.append(f"step {number(job.step)} of {number(job.steps)}")
        if job.images_per_second:
            parts.append(f"{job.images_per_second:,.0f} images/s")
        return " · ".join(parts)
    return job.state.value


def job_list(
    jobs: Sequence[Job],
    counts: dict[JobState, int],
    *,
    now: datetime,
    state: JobState | None,
    page_size: int = PAGE_SIZE,
) -> JobListView:
    total = sum(counts.values())
    filters = [StateFilter("all", number(total), jobs_url(), state is None)]
    filters += [
        StateFilter(s.value, number(counts.get(s, 0)), jobs_url(state=s), s == state)
        for s in JobState
    ]
    active = sum(counts.get(s, 0) for s in (JobState.QUEUED, JobState.LEASED, JobState.RUNNING))
    next_url = None
    if len(jobs) == page_size and jobs:
        next_url = jobs_url(state=state, before_id=jobs[-1].id)
    return JobListView(
        rows=[
            JobRow(
                id=job.id,
                url=job_url(job.id),
                kind=job.kind.value,
                state=_state_label(job),
                tone=STATE_TONES[job.state],
                progress=progress_text(job),
                worker=job.worker or "–",
                attempts=f"{job.attempts}/{job.max_attempts}",
                created=moment(job.created_at, now=now),
            )
            for job in jobs
        ],
        filters=filters,
        active_count=active,
        poll_url=job_table_url(state),
        next_url=next_url,
    )


def _state_label(job: Job) -> str:
    if job.state.is_held and job.cancel_requested_at is not None:
        return "cancelling"
    return job.state.value


# --- the job page -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArtifactRow:
    name: str
    url: str
    size: str
    sha256: str


@dataclass(frozen=True)
class LiveView:
    """The part of the job page that htmx refreshes while the job is active."""

    job_id: int
    state: str
    tone: str
    active: bool
    poll_url: str | None
    progress: str
    progress_max: int
    progress_value: int
    facts: list[Fact]
    loss_chart: MetricChart | None
    accuracy_chart: MetricChart | None
    log_lines: list[str]
    error: str | None
    summary: list[Fact]
    artifacts: list[ArtifactRow]
    results: str
    can_cancel: bool
    can_retry: bool


@dataclass(frozen=True)
class JobPageView:
    id: int
    kind: str
    created: Moment
    spec_json: str
    live: LiveView


def _progress_bar(job: Job) -> tuple[int, int]:
    """(max, value) of the page's progress bar: over the whole run while training (epochs ×
    steps), over the current phase otherwise; (0, 0) when there is nothing to measure."""
    if not job.steps:
        return 0, 0
    step = min(job.step, job.steps)
    if job.epochs and job.epoch:
        return job.epochs * job.steps, (min(job.epoch, job.epochs) - 1) * job.steps + step
    return job.steps, step


#: Summary entries the page shows elsewhere (the charts) or in their own way.
_SUMMARY_SKIPPED = frozenset({"history", "timings"})


def _summary_value(key: str, value: float | int | str | bool) -> str:
    if isinstance(value, float):
        fraction = 0.0 <= value <= 1.0
        if fraction and any(word in key for word in ("acc", "top", "shot")):
            return f"{value * 100:.1f}%"
        return format_value(value)
    return str(value)


def summary_facts(summary: dict[str, Any]) -> list[Fact]:
    """What a job reported, for people: scalars as they are, one level of nested scalars as
    ``section.key`` (lists and per-epoch history left out: the charts show those), and the
    setup and upload times from the worker's timings."""
    facts = []
    for key, value in summary.items():
        if key in _SUMMARY_SKIPPED:
            continue
        if isinstance(value, float | int | str | bool):
            facts.append(Fact(key, _summary_value(key, value)))
        elif isinstance(value, dict):
            facts.extend(
                Fact(f"{key}.{inner}", _summary_value(inner, item))
                for inner, item in value.items()
                if isinstance(item, float | int | str | bool)
            )
    timings = summary.get("timings")
    if isinstance(timings, dict):
        leased, first = timings.get("leased_at"), timings.get("first_step_at")
        if isinstance(leased, float | int) and isinstance(first, float | int):
            facts.append(Fact("setup (lease → first step)", f"{max(first - leased, 0):.1f} s"))
        upload = timings.get("upload_seconds")
        if isinstance(upload, float | int):
            facts.append(Fact("upload", f"{upload:.1f} s"))
    return facts


def _live_facts(job: Job, *, now: datetime) -> list[Fact]:
    """Attempts, worker and lease, then the timings that apply to the job's state."""
    facts = [
        Fact("Attempts", f"{job.attempts} of {job.max_attempts}"),
        Fact("Worker", job.worker or "–"),
        Fact("Lease", str(job.fence)),
    ]
    if job.state.is_held and job.lease_expires_at is not None:
        left = (job.lease_expires_at - now).total_seconds()
        facts.append(
            Fact(
                "Lease expires",
                f"in {duration(left)}" if left > 0 else "expired",
                tone="" if left > 0 else "warn",
            )
        )
    if job.heartbeat_at is not None:
        facts.append(Fact("Last heartbeat", moment(job.heartbeat_at, now=now).ago))
    if job.state is JobState.QUEUED and job.not_before_at is not None and job.not_before_at > now:
        facts.append(
            Fact("Next attempt", f"in {duration((job.not_before_at - now).total_seconds())}")
        )
    if job.started_at is not None:
        end = job.finished_at or now
        facts.append(
            Fact(
                "Ran for" if job.finished_at else "Running for",
                duration((end - job.started_at).total_seconds()),
            )
        )
    if job.images_per_second and job.state is JobState.RUNNING:
        facts.append(Fact("Throughput", f"{job.images_per_second:,.0f} images/s"))
    return facts


def live_view(detail: JobDetail, *, now: datetime) -> LiveView:
    job = detail.job
    active = not job.state.is_final
    losses, accuracies = metric_names(detail.metrics)
    progress_max, progress_value = _progress_bar(job)
    return LiveView(
        job_id=job.id,
        state=_state_label(job),
        tone=STATE_TONES[job.state],
        active=active,
        poll_url=job_live_url(job.id) if active else None,
        progress=progress_text(job),
        progress_max=progress_max,
        progress_value=progress_value,
        facts=_live_facts(job, now=now),
        loss_chart=metric_chart("Loss", detail.metrics, losses),
        accuracy_chart=metric_chart("Accuracy", detail.metrics, accuracies, percent=True),
        log_lines=job.log_tail.splitlines(),
        error=job.error,
        summary=summary_facts(job.summary or {}),
        artifacts=[
            ArtifactRow(
                name=a.name,
                url=artifact_url(job.id, a.name),
                size=byte_size(a.byte_size),
                sha256=a.sha256,
            )
            for a in detail.artifacts
        ],
        results=f"{number(detail.result_rows)} samples in {number(detail.result_chunks)} chunks",
        can_cancel=job.state in {JobState.QUEUED, JobState.LEASED, JobState.RUNNING}
        and job.cancel_requested_at is None,
        can_retry=job.state in {JobState.FAILED, JobState.CANCELLED},
    )


def job_page(detail: JobDetail, *, now: datetime) -> JobPageView:
    job = detail.job
    return JobPageView(
        id=job.id,
        kind=job.kind.value,
        created=moment(job.created_at, now=now),
        spec_json=json.dumps(job.spec, indent=2, sort_keys=True),
        live=live_view(detail, now=now),
    )
