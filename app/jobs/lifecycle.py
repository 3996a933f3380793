"""A job's life: the state machine both job services drive, retries and the job's log tail.

Every change of ``Job.state`` goes through :func:`move`::

    queued             -> leased     a worker leases it
                       -> cancelled  an engineer cancels it
    leased, running    -> running    the first heartbeat (from leased)
                       -> queued     the lease expired, or a retriable failure, with attempts
                                     left (after a backoff); or a stopping worker handed it
                                     back (no attempt used, no backoff)
                       -> succeeded  the worker completed it, every result chunk stored
                       -> failed     the last attempt ended, or a permanent failure
                       -> cancelled  the worker handed it back after a cancel (the heartbeat
                                     reply told it), or the lease expired after one
    failed, cancelled  -> queued     an engineer retries it (a fresh budget of attempts)

Engineers' transitions are in :mod:`app.jobs.service`, workers' in :mod:`app.jobs.worker_service`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from app.errors import Conflict, NotFound
from app.jobs import repository
from app.jobs.config import JobSettings
from app.logging import get_logger
from app.models import Job, JobState

log = get_logger(__name__)


class IllegalTransition(Conflict):
    code = "illegal_transition"


_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.LEASED, JobState.CANCELLED}),
    JobState.LEASED: frozenset(
        {JobState.RUNNING, JobState.QUEUED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.RUNNING: frozenset(
        {JobState.QUEUED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset({JobState.QUEUED}),
    JobState.CANCELLED: frozenset({JobState.QUEUED}),
}


def locked_job(session: Session, job_id: int) -> Job:
    """The job, row-locked for a change of state; NotFound when there is none."""
    job = repository.get_job(session, job_id, for_update=True)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def move(job: Job, to: JobState, *, now: datetime) -> None:
    """The only place a job's state changes.

    Raises:
        IllegalTransition: the state machine has no edge from the job's state to ``to``.
    """
    if to not in _TRANSITIONS[job.state]:
        raise IllegalTransition(
            f"job {job.id} is {job.state.value}: it cannot become {to.value}",
            state=job.state.value,
        )
    log.info("jobs.job.state", job_id=job.id, kind=job.kind.value, frm=job.state.value, to=to.value)
    job.state = to
    if to.is_final:
        job.finished_at = now
        job.lease_expires_at = None
    elif to is JobState.QUEUED:
        job.lease_expires_at = None
        job.finished_at = None


def backoff(attempts: int, config: JobSettings) -> timedelta:
    """The wait before the next attempt, after ``attempts`` failed ones: base × 2^(attempts-1),
    capped."""
    seconds = config.retry_backoff_seconds * 2 ** max(attempts - 1, 0)
    return timedelta(seconds=min(seconds, config.retry_backoff_max_seconds))


def requeue_or_fail(
    job: Job, *, error: str, retriable: bool, now: datetime, cfg: JobSettings
) -> None:
    """Ends an attempt that went wrong: cancelled when a cancel is pending, queued again after a
    backoff while the failure is retriable and attempts are left, failed otherwise."""
    job.error = error
    if job.cancel_requested_at is not None:
        move(job, JobState.CANCELLED, now=now)
    elif retriable and job.attempts < job.max_attempts:
        move(job, JobState.QUEUED, now=now)
        job.not_before_at = now + backoff(job.attempts, cfg)
    else:
        move(job, JobState.FAILED, now=now)


def append_log(job: Job, lines: Sequence[str], config: JobSettings) -> None:
    """Adds lines to the job's log tail, each clipped, keeping the last ``log_tail_lines``."""
    if not lines:
        return
    clipped = [line[: config.max_log_line_chars] for line in lines]
    kept = (job.log_tail.splitlines() if job.log_tail else []) + clipped
    job.log_tail = "\n".join(kept[-config.log_tail_lines :])
