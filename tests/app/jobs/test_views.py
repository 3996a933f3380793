"""The job pages' view models: chart coordinates and the texts the templates print."""

from __future__ import annotations

from datetime import timedelta

from app.jobs import views
from app.jobs.schemas import JobDetail
from app.models import Job, JobState, utcnow
from ml.core.protocol.jobs import DeviceKind, JobKind


def job(**fields: object) -> Job:
    now = utcnow()
    defaults: dict[str, object] = {
        "id": 7,
        "kind": JobKind.TRAIN_FOLD,
        "state": JobState.RUNNING,
        "device": DeviceKind.ANY,
        "spec": {},
        "attempts": 1,
        "max_attempts": 3,
        "fence": 1,
        "worker": "gpu-1",
        "phase": "train",
        "epoch": 2,
        "epochs": 10,
        "step": 50,
        "steps": 200,
        "images_per_second": 1234.0,
        "log_tail": "a\nb",
        "created_at": now - timedelta(minutes=5),
        "started_at": now - timedelta(minutes=4),
        "lease_expires_at": now + timedelta(seconds=30),
    }
    return Job(**{**defaults, **fields})


def test_progress_text_of_a_running_job() -> None:
    assert views.progress_text(job()) == "train · epoch 2 of 10 · step 50 of 200 · 1,234 images/s"


def test_the_live_view_polls_only_while_the_job_is_active() -> None:
    running = views.live_view(JobDetail(job(), [], [], 0, 0), now=utcnow())
    assert running.poll_url == "/jobs/7/live" and running.can_cancel and not running.can_retry
    failed = views.live_view(
        JobDetail(job(state=JobState.FAILED, finished_at=utcnow()), [], [], 0, 0), now=utcnow()
    )
    assert failed.poll_url is None and failed.can_retry and not failed.can_cancel


def test_a_job_being_cancelled_says_so() -> None:
    live = views.live_view(JobDetail(job(cancel_requested_at=utcnow()), [], [], 0, 0), now=utcnow())
    assert live.state == "cancelling"
    assert not live.can_cancel


def test_the_summary_shows_scalars_and_leaves_history_to_the_charts() -> None:
    facts = views.summary_facts(
        {
            "history": [{"epoch": 0}],
            "train_samples": 24,
            "eval": {"top1": 0.825, "per_class_accuracy": [1.0], "few_shot": None},
            "timings": {"leased_at": 100.0, "first_step_at": 102.4, "upload_seconds": 0.25},
        }
    )
    assert [(f.label, f.value) for f in facts] == [
        ("train_samples", "24"),
        ("eval.top1", "82.5%"),
        ("setup (lease → first step)", "2.4 s"),
        ("upload", "0.2 s"),
    ]


def test_the_progress_bar_spans_every_epoch_while_training() -> None:
    live = views.live_view(JobDetail(job(), [], [], 0, 0), now=utcnow())
    assert (live.progress_max, live.progress_value) == (10 * 200, 200 + 50)
