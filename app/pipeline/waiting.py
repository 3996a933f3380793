"""What a dataset's cleaning loop waits for now, in words: a worker, an annotator, an engineer
or the server (the dashboard's status and ``thresher simulate --follow`` show it). Read-only."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from app.models import Dataset, Job, JobState, Pipeline, Stage, utcnow
from app.pipeline import repository
from app.pipeline.service import preview_next
from app.review.repository import leases as lease_repository


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
        for hold in lease_repository.open_task_holds(session, dataset.id, round_.source, now):
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
