"""The worker protocol's business rules: leases, heartbeats, and how an attempt ends (complete,
fail, hand back). Uploads of results and artifacts are in :mod:`app.jobs.uploads`.

**Leases and fences.** A lease lasts ``lease_seconds`` and each heartbeat renews it. Every lease
increments ``Job.fence`` and is bound to the worker token that asked for it; every worker write
must carry the fence it was given and come with that token, and is refused with
:class:`JobLeaseLost` (409) otherwise, before anything is written (and, for uploads, before the
body is read). A lease that expired is
reaped (the attempt counts) when the next worker asks for work; until then its holder may
still renew it, as no one else can have it. A new lease discards the results and artifacts of
the previous one: a job's stored results always come from one attempt.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from app.errors import AppError, Invalid, NotFound
from app.jobs import repository, service
from app.jobs.config import JobSettings
from app.jobs.lifecycle import append_log, locked_job, move, requeue_or_fail
from app.logging import get_logger
from app.models import Job, JobMetric, JobState, utcnow
from ml.core.protocol.jobs import device_kind, parse_spec, spec_inputs
from ml.core.protocol.messages import (
    Complete,
    Fail,
    Heartbeat,
    HeartbeatReply,
    LeaseGrant,
    LeaseRequest,
    Release,
)

log = get_logger(__name__)


class JobLeaseLost(AppError):
    """The worker no longer holds the job: another lease replaced its own, or it ended."""

    status_code = 409
    code = "lease_lost"


class ResultsIncomplete(Invalid):
    code = "results_incomplete"


def reap_expired_leases(
    session: Session, *, config: JobSettings, now: datetime | None = None
) -> int:
    """Takes back every job whose lease ran out: queued again after a backoff (the attempt
    counts), failed when it was the last attempt, cancelled when a cancel was pending."""
    now = now or utcnow()
    expired = repository.expired_leases(session, now=now)
    for job in expired:
        log.warning("jobs.lease.expired", job_id=job.id, worker=job.worker, fence=job.fence)
        append_log(
            job, [f"-- lease {job.fence} expired: {job.worker} stopped sending heartbeats"], config
        )
        requeue_or_fail(
            job,
            error=f"lease expired: worker {job.worker} stopped sending heartbeats",
            retriable=True,
            now=now,
            cfg=config,
        )
    return len(expired)


def lease_job(
    session: Session,
    *,
    request: LeaseRequest,
    config: JobSettings,
    token_id: int | None,
    now: datetime | None = None,
) -> LeaseGrant | None:
    """Leases the next job this worker can run (its kinds, its device), or None. The lease is
    bound to the worker token ``token_id``: its writes must come with that token.

    On PostgreSQL concurrent leases skip each other's locked rows, so two workers never get
    the same job; on SQLite the transaction holds the database's write lock.
    """
    now = now or utcnow()
    try:
        device = device_kind(request.device)
    except ValueError as error:
        raise Invalid(str(error)) from error
    reap_expired_leases(session, config=config, now=now)
    job = repository.next_leasable(session, kinds=request.kinds, device=device, now=now)
    if job is None:
        return None
    _start_attempt(job, worker=request.worker, token_id=token_id, config=config, now=now)
    # A job's results and artifacts always come from one attempt.
    repository.delete_results(session, job.id)
    repository.delete_artifacts(session, job.id)
    log.info(
        "jobs.lease.granted",
        job_id=job.id,
        kind=job.kind.value,
        worker=request.worker,
        fence=job.fence,
        attempt=job.attempts,
    )
    return LeaseGrant(
        job_id=job.id,
        kind=job.kind,
        fence=job.fence,
        attempt=job.attempts,
        max_attempts=job.max_attempts,
        spec=job.spec,
        lease_seconds=config.lease_seconds,
        heartbeat_seconds=config.heartbeat_seconds,
        lease_expires_at=job.lease_expires_at,
    )


def _start_attempt(
    job: Job, *, worker: str, token_id: int | None, config: JobSettings, now: datetime
) -> None:
    """Leases ``job`` to ``worker`` under a new fence: the attempt counts, progress restarts."""
    move(job, JobState.LEASED, now=now)
    job.fence += 1
    job.attempts += 1
    job.worker = worker
    job.lease_token_id = token_id
    job.leased_at = now
    job.started_at = job.heartbeat_at = None
    job.lease_expires_at = now + timedelta(seconds=config.lease_seconds)
    job.not_before_at = None
    job.phase, job.epoch, job.epochs, job.step, job.steps = "leased", 0, 0, 0, 0
    job.images_per_second = 0.0
    job.log_lines = 0
    append_log(
        job,
        [f"-- lease {job.fence}: attempt {job.attempts}/{job.max_attempts} on {worker}"],
        config,
    )


def check_input_held(
    session: Session,
    token_id: int | None,
    *,
    manifest: str | None = None,
    artifact_id: int | None = None,
) -> None:
    """NotFound, as if it did not exist, unless a job the worker token holds now names the
    ``manifest`` (by SHA-256) or the artifact in its spec: a worker reads its own jobs'
    inputs, not every model and sample list on the server."""
    for data in repository.specs_held_by_token(session, token_id):
        manifests, artifacts = spec_inputs(parse_spec(data))
        if manifest in manifests or artifact_id in artifacts:
            return
    raise NotFound(f"no manifest {manifest}" if manifest else f"no artifact {artifact_id}")


def held_job(session: Session, job_id: int, fence: int, token_id: int | None) -> Job:
    """The job, row-locked, if the lease ``fence`` of the token ``token_id`` still holds it;
    else JobLeaseLost and nothing is written."""
    job = locked_job(session, job_id)
    _check_holder(job, fence, token_id)
    return job


def check_lease(session: Session, *, job_id: int, fence: int, token_id: int | None) -> Job:
    """The job, if this lease holds it (JobLeaseLost otherwise); for checks made before a body
    is read. Takes no lock: the write that follows checks again."""
    job = service.get_job(session, job_id)
    _check_holder(job, fence, token_id)
    return job


def _check_holder(job: Job, fence: int, token_id: int | None) -> None:
    if job.fence == fence and job.state.is_held and job.lease_token_id == token_id:
        return
    log.warning(
        "jobs.write.fenced",
        job_id=job.id,
        sent=fence,
        fence=job.fence,
        state=job.state.value,
        token_id=token_id,
        holder_token_id=job.lease_token_id,
    )
    # The same reply whatever differs, and without the current fence: it would let the caller
    # write as the worker that holds the job now.
    raise JobLeaseLost(
        f"job {job.id} is no longer held under lease {fence}: the lease expired or ended, "
        "or another worker holds the job now; stop working on it"
    )


def _same_lease(job: Job, fence: int, token_id: int | None) -> bool:
    """Whether a message repeats one of the lease that last held the job (a retried call)."""
    return job.fence == fence and job.lease_token_id == token_id


def record_heartbeat(
    session: Session,
    *,
    job_id: int,
    message: Heartbeat,
    config: JobSettings,
    token_id: int | None,
    now: datetime | None = None,
) -> HeartbeatReply:
    """Renews the lease and stores progress, epoch metrics and new log lines. The reply tells
    the worker whether the job was cancelled."""
    now = now or utcnow()
    job = held_job(session, job_id, message.fence, token_id)
    if job.state is JobState.LEASED:
        move(job, JobState.RUNNING, now=now)
        job.started_at = now
    job.heartbeat_at = now
    job.lease_expires_at = now + timedelta(seconds=config.lease_seconds)
    if message.progress is not None:
        progress = message.progress
        job.phase, job.epoch, job.epochs = progress.phase, progress.epoch, progress.epochs
        job.step, job.steps = progress.step, progress.steps
        job.images_per_second = progress.images_per_second
    for metrics in message.metrics:
        row = repository.get_metric(session, job.id, job.fence, metrics.epoch)
        if row is None:
            session.add(
                JobMetric(
                    job_id=job.id, fence=job.fence, epoch=metrics.epoch, values=metrics.values
                )
            )
        else:
            row.values = dict(metrics.values)
    if message.log_from > job.log_lines:
        append_log(job, [f"[{message.log_from - job.log_lines} log lines lost]"], config)
        job.log_lines = message.log_from
    new_lines = message.log[job.log_lines - message.log_from :]
    append_log(job, new_lines, config)
    job.log_lines += len(new_lines)
    return HeartbeatReply(
        cancel=job.cancel_requested_at is not None, lease_expires_at=job.lease_expires_at
    )


def complete_job(
    session: Session,
    *,
    job_id: int,
    message: Complete,
    token_id: int | None,
    now: datetime | None = None,
) -> Job:
    """Marks the job succeeded once the results the worker reports are all stored. Sending it
    again after it succeeded is a no-op. A cancel that arrived after the work was done does
    not undo it: the job succeeds."""
    now = now or utcnow()
    job = locked_job(session, job_id)
    if job.state is JobState.SUCCEEDED and _same_lease(job, message.fence, token_id):
        return job
    job = held_job(session, job_id, message.fence, token_id)
    chunks, highest = repository.result_chunk_stats(session, job.id)
    if chunks != message.chunks or highest != message.chunks - 1:
        raise ResultsIncomplete(
            f"the worker sent {message.chunks} result chunks; the server has {chunks} "
            f"(highest index {highest})"
        )
    rows = repository.count_results(session, job.id)
    if rows != message.rows:
        raise ResultsIncomplete(f"the worker sent {message.rows} results; the server has {rows}")
    move(job, JobState.SUCCEEDED, now=now)
    job.summary = message.summary
    job.phase = "done"
    job.error = None
    log.info("jobs.job.succeeded", job_id=job.id, results=rows, worker=job.worker)
    return job


def fail_job(
    session: Session,
    *,
    job_id: int,
    message: Fail,
    config: JobSettings,
    token_id: int | None,
    now: datetime | None = None,
) -> Job:
    """Records a failed attempt: queued again after a backoff while attempts are left and the
    failure is retriable, failed otherwise. Sending it again is a no-op."""
    now = now or utcnow()
    job = locked_job(session, job_id)
    if not job.state.is_held and _same_lease(job, message.fence, token_id):
        return job
    job = held_job(session, job_id, message.fence, token_id)
    log.warning(
        "jobs.job.attempt_failed", job_id=job.id, worker=job.worker, error=message.error[:500]
    )
    last_line = message.error.strip().splitlines()[-1] if message.error.strip() else "no reason"
    append_log(job, [f"-- attempt {job.attempts} failed: {last_line}"], config)
    requeue_or_fail(job, error=message.error, retriable=message.retriable, now=now, cfg=config)
    return job


def release_job(
    session: Session,
    *,
    job_id: int,
    message: Release,
    config: JobSettings,
    token_id: int | None,
    now: datetime | None = None,
) -> Job:
    """A stopping worker hands the job back: queued again at once, the attempt not counted
    (cancelled instead, when a cancel was pending). Sending it again is a no-op."""
    now = now or utcnow()
    job = locked_job(session, job_id)
    if not job.state.is_held and _same_lease(job, message.fence, token_id):
        return job
    job = held_job(session, job_id, message.fence, token_id)
    append_log(
        job, [f"-- handed back by {job.worker}: {message.reason or 'no reason given'}"], config
    )
    if job.cancel_requested_at is not None:
        move(job, JobState.CANCELLED, now=now)
    else:
        job.attempts = max(job.attempts - 1, 0)
        move(job, JobState.QUEUED, now=now)
        job.not_before_at = None
    log.info("jobs.job.released", job_id=job.id, worker=job.worker, reason=message.reason)
    return job
