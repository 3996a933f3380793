"""What a running job sees: its lease, progress reporting, the stop signal, and the heartbeat
thread that carries progress, epoch metrics and log lines to the server.

Handlers report at step boundaries (:meth:`JobContext.report`); when the engineer cancelled the
job (the heartbeat reply says so), the worker is shutting down (SIGTERM) or the lease is gone
(409), :meth:`JobContext.check_stop` raises :class:`~ml.runtime.JobStopped` there, and the
runner hands the job back (or, with a lost lease, drops it without writing anything).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ml.core.protocol.jobs import JobKind, JobSpec
from ml.core.protocol.messages import (
    MAX_HEARTBEAT_EPOCHS,
    MAX_HEARTBEAT_LOG_LINES,
    MAX_LOG_LINE_CHARS,
    MAX_METRIC_NAMES,
    EpochMetrics,
    Heartbeat,
    Progress,
)
from ml.logging import get_logger
from ml.runtime import JobStopped
from ml.worker.client import LeaseLost, ServerClient, ServerError

__all__ = ["Heartbeater", "JobContext", "StopReason"]

log = get_logger(__name__)


#: Log lines kept for the server while it cannot be reached (the oldest go first).
MAX_PENDING_LOG_LINES = 5_000
#: Phases whose steps are the job's compute (what "first step" and "last step" refer to).
_STEP_PHASES = frozenset({"train", "predict"})


class StopReason:
    CANCELLED = "cancelled by an engineer"
    SHUTDOWN = "the worker is shutting down"
    LEASE_LOST = "the lease was lost"


@dataclass
class Timings:
    """Unix times of the job's milestones on this worker (for the protocol-overhead figures)."""

    leased_at: float = 0.0
    first_step_at: float | None = None
    last_step_at: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {
            "leased_at": self.leased_at,
            "first_step_at": self.first_step_at,
            "last_step_at": self.last_step_at,
        }


@dataclass
class JobContext:
    """One leased job, as the handler and the heartbeat thread share it (thread-safe)."""

    job_id: int
    kind: JobKind
    fence: int
    attempt: int
    spec: JobSpec
    client: ServerClient
    work_dir: Path
    device: str
    gpus: list[int]
    procs: int
    shutdown: threading.Event
    timings: Timings = field(default_factory=Timings)
    on_progress: Callable[[Progress], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _progress: Progress | None = None
    _metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    _metrics_sent: dict[int, dict[str, float]] = field(default_factory=dict)
    _log: list[str] = field(default_factory=list)  # lines not yet acknowledged
    _log_base: int = 0  # the number of the first line in ``_log``
    _stop: str | None = None

    # --- what handlers call -----------------------------------------------------------------

    def report(self, progress: Progress) -> None:
        """Records progress at a step boundary; raises :class:`JobStopped` if the job must stop."""
        self.record(progress)
        self.check_stop()

    def record(self, progress: Progress) -> None:
        """Records progress without checking for a stop."""
        now = time.time()
        with self._lock:
            self._progress = progress
            if progress.step > 0 and progress.phase in _STEP_PHASES:
                if self.timings.first_step_at is None:
                    self.timings.first_step_at = now
                self.timings.last_step_at = now
        if self.on_progress is not None:
            self.on_progress(progress)

    def epoch_metrics(self, epoch: int, values: dict[str, float]) -> None:
        """Queues an epoch's metrics for the next heartbeat; NaN and infinite values are left
        out (JSON has no number for them, and the server refuses them)."""
        finite = {name: float(v) for name, v in values.items() if math.isfinite(v)}
        with self._lock:
            self._metrics[epoch] = dict(list(finite.items())[:MAX_METRIC_NAMES])

    def log_line(self, line: str) -> None:
        with self._lock:
            self._log.append(line[:MAX_LOG_LINE_CHARS])
            if len(self._log) > MAX_PENDING_LOG_LINES:  # the server has been away a long time
                dropped = len(self._log) - MAX_PENDING_LOG_LINES
                del self._log[:dropped]
                self._log_base += dropped

    @property
    def stop_reason(self) -> str | None:
        if self._stop is not None:
            return self._stop
        if self.shutdown.is_set():
            return StopReason.SHUTDOWN
        return None

    def check_stop(self) -> None:
        reason = self.stop_reason
        if reason is not None:
            raise JobStopped(reason)

    def request_stop(self, reason: str) -> None:
        with self._lock:
            if self._stop is None or reason == StopReason.LEASE_LOST:
                self._stop = reason

    # --- what the heartbeat thread calls ----------------------------------------------------

    def heartbeat_message(self) -> tuple[Heartbeat, int, dict[int, dict[str, float]]]:
        """The next heartbeat, with what it will acknowledge once sent: the oldest pending
        metrics and log lines, as many as one heartbeat may carry."""
        with self._lock:
            pending = dict(self._unsent_metrics()[:MAX_HEARTBEAT_EPOCHS])
            lines = self._log[:MAX_HEARTBEAT_LOG_LINES]
            message = Heartbeat(
                fence=self.fence,
                progress=self._progress,
                metrics=[EpochMetrics(epoch=e, values=v) for e, v in sorted(pending.items())],
                log_from=self._log_base,
                log=lines,
            )
            return message, self._log_base + len(lines), pending

    def has_pending(self) -> bool:
        """Whether log lines or metrics wait to be sent."""
        with self._lock:
            return bool(self._log) or bool(self._unsent_metrics())

    def _unsent_metrics(self) -> list[tuple[int, dict[str, float]]]:
        """Epochs whose metrics the server has not acknowledged as they are now, oldest first
        (call with the lock held)."""
        return sorted((e, v) for e, v in self._metrics.items() if self._metrics_sent.get(e) != v)

    def acknowledge(self, log_sent: int, metrics: dict[int, dict[str, float]]) -> None:
        """The server stored the log lines before number ``log_sent`` and these metrics."""
        with self._lock:
            if log_sent > self._log_base:
                del self._log[: log_sent - self._log_base]
                self._log_base = log_sent
            self._metrics_sent.update(metrics)


class Heartbeater:
    """Sends a heartbeat every ``interval`` seconds while the job runs (and once more when
    flushed), so the lease stays ours; reads cancellation and lost leases from the replies."""

    def __init__(self, context: JobContext, interval: float) -> None:
        self.context = context
        self.interval = interval
        self._stopped = threading.Event()
        self._send_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._loop, name=f"heartbeat-{context.job_id}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=30)

    def flush(self, *, retry_for: float = 60.0, max_beats: int = 100) -> None:
        """Sends what is pending now (the last epochs' metrics, the last log lines), in as
        many heartbeats as it takes (at most ``max_beats``)."""
        for _ in range(max_beats):
            if not self.send(retry_for=retry_for) or not self.context.has_pending():
                return

    def send(self, *, retry_for: float = 0.0) -> bool:
        """One heartbeat; whether the server took it."""
        context = self.context
        with self._send_lock:
            message, log_sent, metrics = context.heartbeat_message()
            try:
                reply = context.client.heartbeat(context.job_id, message, retry_for=retry_for)
            except LeaseLost as error:
                log.error("worker.job.lease_lost", job=context.job_id, detail=error.message)
                context.request_stop(StopReason.LEASE_LOST)
                return False
            except ServerError as error:
                log.warning("worker.heartbeat.failed", job=context.job_id, error=str(error))
                return False
            context.acknowledge(log_sent, metrics)
            if reply.cancel and context.stop_reason is None:
                log.warning("worker.job.cancel_requested", job=context.job_id)
                context.request_stop(StopReason.CANCELLED)
            return True

    def _loop(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.send()
            except Exception:  # the lease depends on this thread: it must outlive any bug
                log.exception("worker.heartbeat.error", job=self.context.job_id)


class JobLogHandler(logging.Handler):
    """Copies log records emitted while a job runs into its log tail on the server."""

    def __init__(self, context: JobContext) -> None:
        super().__init__(level=logging.INFO)
        self.context = context
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.context.log_line(self.format(record))
        except Exception:  # a log record must never break the job
            self.handleError(record)
