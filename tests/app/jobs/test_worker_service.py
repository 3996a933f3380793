"""The worker protocol's service on both engines: leases, heartbeats, expiry and retries,
fencing, completion, progress and the log tail."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.jobs import service
from app.jobs.worker_service import JobLeaseLost, ResultsIncomplete
from app.models import JobState, utcnow
from ml.core.protocol.jobs import DeviceKind, JobKind
from ml.core.protocol.messages import Complete, EpochMetrics, Fail, Progress, Release
from tests.app.jobs.factories import (
    CONFIG,
    chunk_bytes,
    complete,
    fail,
    heartbeat,
    lease,
    new_job,
    release,
    reload,
    take_over,
    upload,
)

# --- leasing -------------------------------------------------------------------------------------


def test_lease_takes_the_oldest_job_and_bumps_the_fence(session: Session, data_dir: Path) -> None:
    first = new_job(session, data_dir)
    new_job(session, data_dir)
    grant = lease(session)
    assert grant is not None
    assert (grant.job_id, grant.fence, grant.attempt) == (first.id, 1, 1)
    job = reload(session, first)
    assert job.state is JobState.LEASED
    assert job.worker == "w1"
    assert job.lease_expires_at is not None and job.lease_expires_at > utcnow()


def test_higher_priority_is_leased_first(session: Session, data_dir: Path) -> None:
    new_job(session, data_dir)
    urgent = new_job(session, data_dir, priority=5)
    grant = lease(session)
    assert grant is not None and grant.job_id == urgent.id


def test_nothing_to_lease_for_other_kinds_or_devices(session: Session, data_dir: Path) -> None:
    job = new_job(session, data_dir)
    job.device = DeviceKind.CUDA
    session.commit()
    assert lease(session, kinds=[JobKind.TRAIN_JUNK]) is None
    assert lease(session, device="cpu") is None
    grant = lease(session, device="cuda:1")
    assert grant is not None and grant.job_id == job.id


def test_racing_workers_never_share_a_job(
    session_factory: sessionmaker[Session], data_dir: Path
) -> None:
    with transaction(session_factory) as session:
        jobs = [new_job(session, data_dir).id for _ in range(3)]
    granted: list[int] = []
    barrier = threading.Barrier(8)

    def race(worker: int) -> None:
        barrier.wait()
        with session_factory() as session:
            grant = lease(session, worker=f"w{worker}")
        if grant is not None:
            granted.append(grant.job_id)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(granted) == sorted(jobs)


def test_a_new_lease_discards_the_previous_attempts_results(
    session: Session, data_dir: Path
) -> None:
    job = new_job(session, data_dir)
    grant = lease(session)
    assert grant is not None
    upload(session, job, grant.fence, 0, chunk_bytes([1, 2]), data_dir)
    assert take_over(session) is not None
    assert service.job_detail(session, job).result_rows == 0


# --- heartbeats, expiry, retries -----------------------------------------------------------------


def test_heartbeat_starts_the_job_and_renews_the_lease(session: Session, data_dir: Path) -> None:
    job = new_job(session, data_dir)
    grant = lease(session)
    assert grant is not None
    before = reload(session, job).lease_expires_at
    assert not heartbeat(
        session,
        job,
        grant.fence,
        progress=Progress(phase="train", epoch=1, epochs=3, step=4, steps=10),
    )
    job = reload(session, job)
    assert job.state is JobState.RUNNING
    assert (job.epoch, job.step, job.steps) == (1, 4, 10)
    assert job.lease_expires_at is not None and before is not None
    assert job.lease_expires_at >= before


def test_expired_lease_returns_the_job_to_the_queue_after_a_backoff(
    session: Session, data_dir: Path
) -> None:
    job = new_job(session, data_dir)
    assert lease(session, worker="dead") is not None
    later = utcnow() + timedelta(seconds=CONFIG.lease_seconds + 1)
    assert lease(session, worker="w2", now=later) is None  # reaped, but backing off
    job = reload(session, job)
    assert job.state is JobState.QUEUED
    assert job.attempts == 1
    assert job.error is not None and "dead" in job.error
    assert job.not_before_at == later + timedelta(seconds=CONFIG.retry_backoff_seconds)
    grant = lease(session, worker="w2", now=later + timedelta(seconds=CONFIG.retry_backoff_seconds))
    assert grant is not None and (grant.fence, grant.attempt) == (2, 2)


def test_last_attempt_expiring_fails_the_job(session: Session, data_dir: Path) -> None:
    job = new_job(session, data_dir, max_attempts=1)
    assert lease(session) is not None
    lease(session, now=utcnow() + timedelta(seconds=CONFIG.lease_seconds + 1))
    job = reload(session, job)
    assert job.state is JobState.FAILED
    assert job.finished_at is not None


def test_retriable_failures_requeue_until_the_attempts_run_out(
    session: Session, data_dir: Path
) -> None:
    job = new_job(session, data_dir, max_attempts=2)
    now = utcnow()
    for attempt, expected in ((1, JobState.QUEUED), (2, JobState.FAILED)):
        grant = lease(session, now=now)
        assert grant is not None and grant.attempt == attempt
        fail(session, job, Fail(fence=grant.fence, error="CUDA OOM"), now=now)
        assert reload(session, job).state is expected
        now += timedelta(hours=1)
    assert reload(session, job).error == "CUDA OOM"


def test_permanent_failure_fails_at_once(session: Session, data_dir: Path) -> None:
    job = new_job(session, data_dir)
    grant = lease(session)
    assert grant is not None
    fail(session, job, Fail(fence=grant.fence, error="bad recipe", retriable=False))
    assert reload(session, job).state is JobState.FAILED


def test_release_requeues_without_using_an_attempt(session: Session, data_dir: Path) -> None:
    job = new_job(session, data_dir)
    grant = lease(session)
    assert grant is not None
    release(session, job, Release(fence=grant.fence, reason="SIGTERM"))
    job = reload(session, job)
    assert (job.state, job.attempts, job.not_before_at) == (JobState.QUEUED, 0, None)
    again = lease(session, worker="w2")
    assert again is not None and (again.attempt, again.fence) == (1, 2)


# --- fencing -------------------------------------------------------------------------------------


def test_stale_fence_is_refused_and_writes_nothing(session: Session, data_dir: Path) -> None:
    job = new_job(session, data_dir)
    old = lease(session, worker="old")
    assert old is not None
    new = take_over(session, worker="new")
    assert new is not None and new.fence == old.fence + 1
    upload(session, job, new.fence, 0, chunk_bytes([1, 2]), data_dir)
    writes = [
        lambda: heartbeat(session, job, old.fence, log=["late line"]),
        lambda: upload(session, job, old.fence, 1, chunk_bytes([3, 4]), data_dir),
        lambda: complete(session, job, Complete(fence=old.fence)),
        lambda: fail(session, job, Fail(fence=old.fence, error="x")),
        lambda: release(session, job, Release(fence=old.fence)),
    ]
    for write in writes:
        with pytest.raises(JobLeaseLost):
            write()
        session.rollback()
    job = reload(session, job)
    assert (job.state, job.worker, job.fence) == (JobState.LEASED, "new", new.fence)
    assert "late line" not in job.log_tail
    assert service.job_results(session, job).sample_id.tolist() == [1, 2]


# --- completing ----------------------------------------------------------------------------------


def test_complete_sent_twice_is_a_no_op(session: Session, data_dir: Path) -> None:
    job = new_job(session, data_dir)
    grant = lease(session)
    assert grant is not None
    for _ in range(2):
        complete(session, job, Complete(fence=grant.fence))
    assert reload(session, job).state is JobState.SUCCEEDED


def test_complete_checks_every_chunk_arrived(session: Session, data_dir: Path) -> None:
    job = new_job(session, data_dir)
    grant = lease(session)
    assert grant is not None
    upload(session, job, grant.fence, 0, chunk_bytes([1, 2]), data_dir)
    with pytest.raises(ResultsIncomplete, match="2 result chunks"):
        complete(session, job, Complete(fence=grant.fence, chunks=2, rows=4))
    session.rollback()
    upload(session, job, grant.fence, 1, chunk_bytes([3, 4]), data_dir)
    complete(session, job, Complete(fence=grant.fence, chunks=2, rows=4))
    assert reload(session, job).state is JobState.SUCCEEDED


# --- progress, metrics, log ----------------------------------------------------------------------


def test_epoch_metrics_are_kept_and_updated(session: Session, data_dir: Path) -> None:
    job = new_job(session, data_dir)
    grant = lease(session)
    assert grant is not None
    heartbeat(
        session, job, grant.fence, metrics=[EpochMetrics(epoch=1, values={"train_loss": 2.0})]
    )
    heartbeat(
        session,
        job,
        grant.fence,
        metrics=[
            EpochMetrics(epoch=1, values={"train_loss": 1.5}),
            EpochMetrics(epoch=2, values={"train_loss": 1.0}),
        ],
    )
    metrics = service.job_detail(session, reload(session, job)).metrics
    assert [(m.epoch, m.values["train_loss"]) for m in metrics] == [(1, 1.5), (2, 1.0)]


def test_a_repeated_heartbeat_does_not_repeat_log_lines(session: Session, data_dir: Path) -> None:
    job = new_job(session, data_dir)
    grant = lease(session)
    assert grant is not None
    heartbeat(session, job, grant.fence, log_from=0, log=["a", "b"])
    heartbeat(session, job, grant.fence, log_from=0, log=["a", "b", "c"])
    heartbeat(session, job, grant.fence, log_from=3, log=["d"])
    lines = reload(session, job).log_tail.splitlines()
    assert [line for line in lines if not line.startswith("--")] == ["a", "b", "c", "d"]


def test_the_log_tail_is_bounded(session: Session, data_dir: Path) -> None:
    job = new_job(session, data_dir)
    grant = lease(session)
    assert grant is not None
    heartbeat(session, job, grant.fence, log=[f"line {i}" for i in range(20)])
    lines = reload(session, job).log_tail.splitlines()
    assert lines == [f"line {i}" for i in range(15, 20)]
