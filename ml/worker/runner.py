"""The worker loop: lease a job, run its handler, publish what it produced, repeat.

* Nothing to do (204) or the server unreachable: wait with exponential backoff (capped), ask
  again.
* A job: a heartbeat thread keeps the lease; the handler runs; the results are uploaded in
  chunks, then the model files and other artifacts, then ``complete``. A failure is reported
  with ``fail`` (retriable unless the spec itself is unusable).
* SIGTERM or Ctrl+C: the running job stops at its next step boundary and is handed back
  (``release``: it does not use up an attempt); a second signal exits at once.
* A lost lease (409): the job is dropped without writing anything more.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import ValidationError

from ml.core.protocol.bundles import encode_results
from ml.core.protocol.jobs import MODEL_FILES, JobKind, parse_spec
from ml.core.protocol.messages import Complete, Fail, LeaseGrant, LeaseRequest, Progress, Release
from ml.logging import get_logger
from ml.runtime import JobStopped
from ml.worker.client import LeaseLost, Rejected, ServerClient, ServerError
from ml.worker.context import Heartbeater, JobContext, JobLogHandler, StopReason
from ml.worker.handlers import UnknownKind, handler_for
from ml.worker.inputs import Inputs, PathMap

__all__ = ["Worker", "WorkerConfig"]

log = get_logger("ml.worker")


@dataclass
class WorkerConfig:
    """How a worker runs. ``procs`` > 1 runs each job on that many processes (one per GPU of
    ``gpus``, or CPU processes with the gloo backend)."""

    name: str
    device: str
    kinds: list[JobKind]
    cache_dir: Path
    gpus: list[int] = field(default_factory=list)
    procs: int = 1
    path_map: PathMap = field(default_factory=PathMap)
    poll_min: float = 1.0
    poll_max: float = 30.0
    max_jobs: int | None = None
    idle_exit: float | None = None
    watch_parent: int | None = None


def default_worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    def __init__(
        self,
        config: WorkerConfig,
        client: ServerClient,
        *,
        on_progress: Any = None,
    ) -> None:
        self.config = config
        self.client = client
        self.inputs = Inputs(client, config.cache_dir, path_map=config.path_map)
        self.shutdown = threading.Event()
        self.on_progress = on_progress
        self.jobs_done = 0

    # --- signals ---------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: FrameType | None) -> None:
            if self.shutdown.is_set():
                log.warning("worker.exit.forced", signal=signum)
                raise SystemExit(128 + signum)
            log.warning("worker.shutdown.requested", signal=signal.Signals(signum).name)
            self.shutdown.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> int:
        """Leases and runs jobs until shut down; returns the process exit status."""
        config = self.config
        request = LeaseRequest(
            worker=config.name,
            kinds=config.kinds,
            device=config.device,
            gpus=len(config.gpus),
        )
        log.info(
            "worker.started",
            name=config.name,
            device=config.device,
            procs=config.procs,
            kinds=",".join(config.kinds),
        )
        wait = config.poll_min
        idle_since = time.monotonic()
        if config.watch_parent is not None:
            threading.Thread(target=self._watch_parent, name="watch-parent", daemon=True).start()
        while not self.shutdown.is_set():
            if self._parent_gone():
                log.warning("worker.parent_gone", action="exiting")
                break
            try:
                grant = self.client.lease(request)
            except Rejected as error:
                if error.status in (401, 403):
                    log.error("worker.refused", status=error.status, detail=error.message)
                    return 2
                log.error("worker.lease.rejected", detail=str(error))
                grant = None
            except ServerError as error:
                log.warning("worker.server_unreachable", error=str(error), retry_in=round(wait, 1))
                grant = None
            if grant is None:
                if (
                    config.idle_exit is not None
                    and time.monotonic() - idle_since > config.idle_exit
                ):
                    log.info("worker.idle_exit")
                    break
                self.shutdown.wait(wait * random.uniform(0.8, 1.0))
                wait = min(config.poll_max, wait * 2)
                continue
            wait = config.poll_min
            self.run_job(grant)
            idle_since = time.monotonic()
            self.jobs_done += 1
            if config.max_jobs is not None and self.jobs_done >= config.max_jobs:
                break
        log.info("worker.stopped", jobs=self.jobs_done)
        return 0

    def _parent_gone(self) -> bool:
        parent = self.config.watch_parent
        return parent is not None and os.getppid() != parent

    def _watch_parent(self, every: float = 1.0, grace: float = 30.0) -> None:
        """A local worker outlives its server only by ``grace`` seconds: its job stops at the
        next step, and if the worker is still busy then (retrying calls to the server that is
        gone, which would take many minutes) the process exits. The job's lease expires on the
        server, which hands the job out again when it runs."""
        while not self._parent_gone():
            if self.shutdown.wait(every):
                return
        log.warning("worker.parent_gone", action="stopping")
        self.shutdown.set()
        time.sleep(grace)
        log.warning("worker.parent_gone", action="exiting now")
        os._exit(0)

    def run_job(self, grant: LeaseGrant) -> None:
        """Runs one leased job to its end: completed, failed, handed back or dropped."""
        work_dir = self.config.cache_dir / "jobs" / str(grant.job_id)
        work_dir.mkdir(parents=True, exist_ok=True)
        log.info(
            "worker.job.leased",
            job=grant.job_id,
            kind=grant.kind.value,
            attempt=f"{grant.attempt}/{grant.max_attempts}",
            fence=grant.fence,
        )
        try:
            spec = parse_spec(grant.spec)
        except ValidationError as error:
            self._fail(grant.job_id, grant.fence, f"the job's spec is invalid: {error}", False)
            return
        context = JobContext(
            job_id=grant.job_id,
            kind=grant.kind,
            fence=grant.fence,
            attempt=grant.attempt,
            spec=spec,
            client=self.client,
            work_dir=work_dir,
            device=self.config.device,
            gpus=self.config.gpus,
            procs=self.config.procs,
            shutdown=self.shutdown,
            on_progress=self.on_progress,
        )
        context.timings.leased_at = time.time()
        job_logs = JobLogHandler(context)
        logging.getLogger("ml").addHandler(job_logs)
        heartbeat = Heartbeater(context, grant.heartbeat_seconds)
        heartbeat.start()
        try:
            self._run_and_publish(context, heartbeat)
        except JobStopped as stop:
            self._stopped(context, stop.reason)
        except LeaseLost as error:
            log.error("worker.job.lease_lost", job=grant.job_id, detail=error.message)
        except Exception as error:
            retriable = not isinstance(error, _PERMANENT)
            log.exception("worker.job.failed", job=grant.job_id, retriable=retriable)
            heartbeat.flush(retry_for=10)
            self._fail(grant.job_id, grant.fence, _describe(error), retriable)
        finally:
            heartbeat.stop()
            logging.getLogger("ml").removeHandler(job_logs)

    def _run_and_publish(self, context: JobContext, heartbeat: Heartbeater) -> None:
        handler = handler_for(context.kind)
        outcome = handler(context, self.inputs)
        # The work is done: a shutdown waits for the upload (seconds) rather than waste it;
        # a cancel or a lost lease still stops here.
        if context.stop_reason in (StopReason.CANCELLED, StopReason.LEASE_LOST):
            raise JobStopped(context.stop_reason)
        started = time.time()
        context.record(Progress(phase="uploading"))
        chunks = rows = 0
        if outcome.results is not None:
            for index, chunk in enumerate(outcome.results.chunks()):
                self.client.upload_results(
                    context.job_id, context.fence, index, encode_results(chunk)
                )
                chunks, rows = index + 1, rows + len(chunk)
        if outcome.model_dir is not None:
            for name in MODEL_FILES:
                self.client.upload_artifact(
                    context.job_id, context.fence, name, outcome.model_dir / name
                )
            recipe = outcome.model_dir / "recipe.yaml"
            if recipe.is_file():
                self.client.upload_artifact(context.job_id, context.fence, "recipe.yaml", recipe)
        for name, path in outcome.files.items():
            self.client.upload_artifact(context.job_id, context.fence, name, path)
        heartbeat.flush()
        if context.stop_reason == StopReason.LEASE_LOST:
            raise JobStopped(StopReason.LEASE_LOST)
        summary = {
            **outcome.summary,
            "timings": {**context.timings.as_dict(), "upload_seconds": time.time() - started},
        }
        self.client.complete(
            context.job_id, Complete(fence=context.fence, chunks=chunks, rows=rows, summary=summary)
        )
        log.info("worker.job.succeeded", job=context.job_id, results=rows, chunks=chunks)
        shutil.rmtree(context.work_dir, ignore_errors=True)

    def _stopped(self, context: JobContext, reason: str) -> None:
        if reason == StopReason.LEASE_LOST:
            log.error("worker.job.dropped", job=context.job_id, reason=reason)
            return
        log.warning("worker.job.handing_back", job=context.job_id, reason=reason)
        try:
            self.client.release(
                context.job_id, Release(fence=context.fence, reason=reason), retry_for=60
            )
        except ServerError as error:
            log.error("worker.job.release_failed", job=context.job_id, error=str(error))

    def _fail(self, job_id: int, fence: int, error: str, retriable: bool) -> None:
        try:
            self.client.fail(job_id, Fail(fence=fence, error=error[-20_000:], retriable=retriable))
        except ServerError as problem:
            log.error("worker.job.fail_not_reported", job=job_id, error=str(problem))


#: Failures that another attempt would repeat: an unusable spec, recipe, manifest or data, a
#: kind this worker cannot run, a request the server refused.
_PERMANENT = (UnknownKind, Rejected, ValueError, TypeError, LookupError)


def _describe(error: BaseException) -> str:
    text = "".join(traceback.format_exception(error))
    return f"{type(error).__name__}: {error}\n\n{text}"
