"""A job's context and heartbeats: what is sent once, cancellation and lost leases."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest

from ml.core.protocol.jobs import JobKind, ManifestRef, TrainFoldSpec
from ml.core.protocol.messages import Progress
from ml.runtime import JobStopped
from ml.worker.client import ServerClient
from ml.worker.context import Heartbeater, JobContext, StopReason

SPEC = TrainFoldSpec(
    recipe="r", train=ManifestRef(sha256="ab" * 32, count=1, num_classes=2), fold=0
)


def context(
    tmp_path: Path, replies: list[httpx.Response], sent: list[dict[str, object]]
) -> JobContext:
    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return replies.pop(0)

    client = ServerClient(
        "http://server", "t", transport=httpx.MockTransport(handle), sleep=lambda _: None
    )
    return JobContext(
        job_id=5,
        kind=JobKind.TRAIN_FOLD,
        fence=3,
        attempt=1,
        spec=SPEC,
        client=client,
        work_dir=tmp_path,
        device="cpu",
        gpus=[],
        procs=1,
        shutdown=threading.Event(),
    )


def ok(cancel: bool = False) -> httpx.Response:
    return httpx.Response(200, json={"cancel": cancel, "lease_expires_at": "2030-01-01T00:00:00Z"})


def test_log_lines_and_metrics_are_sent_once(tmp_path: Path) -> None:
    sent: list[dict[str, object]] = []
    job = context(tmp_path, [ok(), ok(), ok()], sent)
    beats = Heartbeater(job, interval=60)
    job.log_line("first")
    job.epoch_metrics(1, {"train_loss": 1.0})
    beats.send()
    job.log_line("second")
    beats.send()
    job.epoch_metrics(1, {"train_loss": 0.5})
    beats.send()
    assert [(b["log_from"], b["log"]) for b in sent] == [(0, ["first"]), (1, ["second"]), (2, [])]
    assert [b["metrics"] for b in sent] == [
        [{"epoch": 1, "values": {"train_loss": 1.0}}],
        [],
        [{"epoch": 1, "values": {"train_loss": 0.5}}],
    ]
    assert all(b["fence"] == 3 for b in sent)


def test_unsent_lines_are_sent_again_after_a_failed_heartbeat(tmp_path: Path) -> None:
    sent: list[dict[str, object]] = []
    job = context(tmp_path, [httpx.Response(503), ok()], sent)
    beats = Heartbeater(job, interval=60)
    job.log_line("kept")
    beats.send()  # no retry budget: fails, nothing acknowledged
    beats.send()
    assert [b["log"] for b in sent] == [["kept"], ["kept"]]


def test_a_cancel_in_the_reply_stops_the_job_at_its_next_step(tmp_path: Path) -> None:
    job = context(tmp_path, [ok(cancel=True)], [])
    Heartbeater(job, interval=60).send()
    with pytest.raises(JobStopped, match=StopReason.CANCELLED):
        job.report(Progress(phase="train", step=2, steps=9))


def test_a_409_means_the_lease_is_lost(tmp_path: Path) -> None:
    conflict = httpx.Response(409, json={"error": {"code": "lease_lost", "message": "gone"}})
    job = context(tmp_path, [conflict], [])
    Heartbeater(job, interval=60).send()
    assert job.stop_reason == StopReason.LEASE_LOST


def test_steps_mark_the_first_and_last_compute_step(tmp_path: Path) -> None:
    job = context(tmp_path, [], [])
    job.report(Progress(phase="fetching"))
    assert job.timings.first_step_at is None
    job.report(Progress(phase="train", step=1, steps=4))
    first = job.timings.first_step_at
    job.report(Progress(phase="predict", step=4, steps=4))
    job.record(Progress(phase="uploading"))
    assert first is not None and job.timings.last_step_at is not None
    assert job.timings.last_step_at >= first


def test_a_backlog_goes_out_in_bounded_heartbeats_and_nan_is_left_out(tmp_path: Path) -> None:
    from ml.core.protocol.messages import MAX_HEARTBEAT_EPOCHS, MAX_HEARTBEAT_LOG_LINES

    sent: list[dict[str, object]] = []
    job = context(tmp_path, [ok() for _ in range(20)], sent)
    for epoch in range(MAX_HEARTBEAT_EPOCHS * 2 + 1):
        job.epoch_metrics(epoch, {"train_loss": float("nan") if epoch == 3 else 1.0, "lr": 0.1})
    for number in range(MAX_HEARTBEAT_LOG_LINES + 7):
        job.log_line(f"line {number}")

    Heartbeater(job, interval=60).flush(retry_for=0)

    assert len(sent) == 3
    assert [len(b["metrics"]) for b in sent] == [MAX_HEARTBEAT_EPOCHS, MAX_HEARTBEAT_EPOCHS, 1]  # type: ignore[arg-type]
    assert [len(b["log"]) for b in sent] == [MAX_HEARTBEAT_LOG_LINES, 7, 0]  # type: ignore[arg-type]
    assert [b["log_from"] for b in sent] == [
        0,
        MAX_HEARTBEAT_LOG_LINES,
        MAX_HEARTBEAT_LOG_LINES + 7,
    ]
    epochs = [m["epoch"] for b in sent for m in b["metrics"]]  # type: ignore[attr-defined]
    assert epochs == list(range(MAX_HEARTBEAT_EPOCHS * 2 + 1))
    third = next(m for b in sent for m in b["metrics"] if m["epoch"] == 3)  # type: ignore[attr-defined]
    assert third["values"] == {"lr": 0.1}
    assert not job.has_pending()
