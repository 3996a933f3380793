"""The engineers' job service on both engines: cancel and retry, and the transitions they may not
make."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from app.jobs import service
from app.jobs.lifecycle import IllegalTransition
from app.models import JobState, utcnow
from ml.core.protocol.messages import Complete, Fail, Release
from tests.app.jobs.factories import complete, fail, heartbeat, lease, new_job, release, reload


def test_cancelling_a_queued_job_is_immediate(session: Session, data_dir: Path) -> None:
    job = new_job(session, data_dir)
    service.cancel_job(session, job_id=job.id)
    session.commit()
    assert reload(session, job).state is JobState.CANCELLED
    assert lease(session) is None


def test_cancelling_a_running_job_tells_its_worker_then_ends_on_hand_back(
    session: Session, data_dir: Path
) -> None:
    job = new_job(session, data_dir)
    grant = lease(session)
    assert grant is not None
    assert not heartbeat(session, job, grant.fence)
    service.cancel_job(session, job_id=job.id)
    session.commit()
    assert reload(session, job).state is JobState.RUNNING
    assert heartbeat(session, job, grant.fence)
    release(session, job, Release(fence=grant.fence, reason="cancelled"))
    assert reload(session, job).state is JobState.CANCELLED


def test_cancel_of_a_dead_workers_job_ends_when_its_lease_expires(
    session: Session, data_dir: Path
) -> None:
    job = new_job(session, data_dir)
    assert lease(session) is not None
    service.cancel_job(session, job_id=job.id)
    session.commit()
    lease(session, now=utcnow() + timedelta(hours=1))
    assert reload(session, job).state is JobState.CANCELLED


def test_retry_requeues_a_failed_job_with_fresh_attempts(session: Session, data_dir: Path) -> None:
    job = new_job(session, data_dir, max_attempts=1)
    grant = lease(session)
    assert grant is not None
    fail(session, job, Fail(fence=grant.fence, error="boom"))
    service.retry_job(session, job_id=job.id)
    session.commit()
    job = reload(session, job)
    assert (job.state, job.attempts) == (JobState.QUEUED, 0)
    assert lease(session) is not None


def test_finished_jobs_refuse_illegal_transitions(session: Session, data_dir: Path) -> None:
    job = new_job(session, data_dir)
    grant = lease(session)
    assert grant is not None
    complete(session, job, Complete(fence=grant.fence))
    with pytest.raises(IllegalTransition):
        service.retry_job(session, job_id=job.id)
    with pytest.raises(IllegalTransition):
        service.cancel_job(session, job_id=job.id)
