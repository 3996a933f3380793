"""Jobs: creating and steering them (engineers), and the worker protocol's business rules.

The state machine (every change of ``Job.state`` goes through :func:`_move`)::

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

**Leases and fences.** A lease lasts ``lease_seconds`` and each heartbeat renews it. Every lease
increments ``Job.fence`` and is bound to the worker token that asked for it; every worker write
must carry the fence it was given and come with that token, and is refused with
:class:`LeaseLost` (409) otherwise, before anything is written (and, for uploads, before the
body is read). A lease that expired is
reaped (the attempt counts) when the next worker asks for work; until then its holder may
still renew it, as no one else can have it. A new lease discards the results and artifacts of
the previous one: a job's stored results always come from one attempt.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from app.errors import AppError, Conflict, Invalid, NotFound
from app.jobs import ingest, manifests, repository
from app.jobs.config import JobSettings
from app.jobs.schemas import JobCreate, JobDetail, SampleSet, UploadedFile
from app.logging import get_logger
from app.models import Job, JobArtifact, JobMetric, JobResultChunk, JobState, User, utcnow
from ml.core.protocol.bundle_format import BundleError
from ml.core.protocol.bundles import ResultChunk, decode_results
from ml.core.protocol.jobs import (
    MODEL_FILES,
    DeviceKind,
    EvaluateSpec,
    JobKind,
    JobSpec,
    ManifestRef,
    ModelRef,
    PredictSpec,
    ScoreJunkSpec,
    TrainFinalSpec,
    TrainFoldSpec,
    TrainJunkSpec,
    TrainPredictSpec,
    device_kind,
    parse_spec,
    result_set,
    spec_json,
)
from ml.core.protocol.messages import (
    Complete,
    Fail,
    Heartbeat,
    HeartbeatReply,
    LeaseGrant,
    LeaseRequest,
    Release,
    ResultsStored,
)

log = get_logger(__name__)

#: Kinds whose specs only the pipeline builds (from its rounds' state); engineers create the rest.
PIPELINE_ONLY_KINDS = frozenset({JobKind.EMBED, JobKind.KNN, JobKind.CONFIDENT_LEARNING})
ENGINEER_KINDS = frozenset(JobKind) - PIPELINE_ONLY_KINDS

MAX_PAGE = 500
ARTIFACT_DIR = "jobs/artifacts"
UPLOAD_DIR = "jobs/uploads"
MAX_RESULT_CHUNK_INDEX = 1_000_000
_ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class QuotaExceeded(AppError):
    status_code = 413
    code = "quota_exceeded"


class LeaseLost(AppError):
    """The worker no longer holds the job: another lease replaced its own, or it ended."""

    status_code = 409
    code = "lease_lost"


class IllegalTransition(Conflict):
    code = "illegal_transition"


class MalformedUpload(AppError):
    status_code = 400
    code = "malformed_upload"


class ResultsIncomplete(Invalid):
    code = "results_incomplete"


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


def _move(job: Job, to: JobState, *, now: datetime) -> None:
    """The only place a job's state changes."""
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


def _requeue_or_fail(
    job: Job, *, error: str, retriable: bool, now: datetime, cfg: JobSettings
) -> None:
    job.error = error
    if job.cancel_requested_at is not None:
        _move(job, JobState.CANCELLED, now=now)
    elif retriable and job.attempts < job.max_attempts:
        _move(job, JobState.QUEUED, now=now)
        job.not_before_at = now + backoff(job.attempts, cfg)
    else:
        _move(job, JobState.FAILED, now=now)


def _append_log(job: Job, lines: Sequence[str], config: JobSettings) -> None:
    if not lines:
        return
    clipped = [line[: config.max_log_line_chars] for line in lines]
    kept = (job.log_tail.splitlines() if job.log_tail else []) + clipped
    job.log_tail = "\n".join(kept[-config.log_tail_lines :])


# --- engineers ----------------------------------------------------------------------------------


def get_job(session: Session, job_id: int) -> Job:
    job = repository.get_job(session, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def _locked_job(session: Session, job_id: int) -> Job:
    job = repository.get_job(session, job_id, for_update=True)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def list_jobs(
    session: Session,
    *,
    states: Sequence[JobState] = (),
    kind: JobKind | None = None,
    dataset_id: int | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[Job]:
    """Newest first; pass the last id as ``before_id`` for the next page."""
    return repository.list_jobs(
        session,
        states=states,
        kind=kind,
        dataset_id=dataset_id,
        before_id=before_id,
        limit=max(1, min(limit, MAX_PAGE)),
    )


def state_counts(session: Session) -> dict[JobState, int]:
    return repository.state_counts(session)


def job_detail(session: Session, job: Job) -> JobDetail:
    chunks, _ = repository.result_chunk_stats(session, job.id)
    return JobDetail(
        job=job,
        metrics=repository.list_metrics(session, job.id, job.fence),
        artifacts=repository.list_artifacts(session, job.id),
        result_rows=repository.count_results(session, job.id),
        result_chunks=chunks,
    )


def create_job(
    session: Session,
    *,
    spec: JobSpec,
    config: JobSettings,
    device: DeviceKind = DeviceKind.ANY,
    priority: int = 0,
    max_attempts: int | None = None,
    dataset_id: int | None = None,
    user: User | None = None,
) -> Job:
    """Queues a job. The pipeline calls this with specs it built; engineers go through
    :func:`create_job_from_request`."""
    job = Job(
        kind=spec.kind,
        state=JobState.QUEUED,
        spec=spec_json(spec),
        device=device,
        priority=priority,
        dataset_id=dataset_id,
        created_by_id=user.id if user else None,
        max_attempts=max_attempts or config.max_attempts,
        attempts=0,
        fence=0,
        log_tail="",
        log_lines=0,
    )
    session.add(job)
    session.flush()
    log.info("jobs.job.created", job_id=job.id, kind=job.kind.value, device=device.value)
    return job


def create_job_from_request(
    session: Session, *, body: JobCreate, user: User, data_dir: Path, config: JobSettings
) -> Job:
    """Builds the spec of an engineer's request (storing its manifests) and queues the job."""
    spec = build_spec(session, body=body, data_dir=data_dir)
    return create_job(
        session,
        spec=spec,
        config=config,
        device=body.device,
        priority=body.priority,
        max_attempts=body.max_attempts,
        dataset_id=body.dataset_id,
        user=user,
    )


def build_spec(session: Session, *, body: JobCreate, data_dir: Path) -> JobSpec:
    """The spec of ``body``: sample sets become stored manifests, job ids become model refs.

    Raises:
        Invalid: a part the kind needs is missing, or one it cannot use is given.
    """

    def manifest(name: str, value: SampleSet | None) -> ManifestRef:
        if value is None:
            raise Invalid(f"a {body.kind.value} job needs '{name}'")
        return _sample_set_manifest(session, data_dir, body.dataset_id, value, name)

    def optional(name: str, value: SampleSet | None) -> ManifestRef | None:
        return None if value is None else manifest(name, value)

    def recipe() -> str | dict[str, object]:
        if body.recipe is None:
            raise Invalid(f"a {body.kind.value} job needs a 'recipe'")
        return body.recipe

    def model() -> ModelRef:
        if body.model_job_id is None:
            raise Invalid(f"a {body.kind.value} job needs 'model_job_id'")
        return model_ref(session, body.model_job_id)

    common: dict[str, Any] = {"seed": body.seed}
    kind = body.kind
    if kind in PIPELINE_ONLY_KINDS:
        raise Invalid(
            f"{kind.value} jobs are queued by the pipeline's rounds (embed: also `thresher ml "
            "embed`); create one of: " + ", ".join(sorted(k.value for k in ENGINEER_KINDS))
        )
    spec: JobSpec
    if kind is JobKind.TRAIN_JUNK:
        spec = TrainJunkSpec(
            recipe=recipe(),
            train=manifest("train", body.train),
            predict=optional("predict", body.predict),
            **common,
        )
    elif kind is JobKind.SCORE_JUNK:
        spec = ScoreJunkSpec(model=model(), predict=manifest("predict", body.predict), **common)
    elif kind is JobKind.TRAIN_FOLD:
        if body.fold is None:
            raise Invalid("a train_fold job needs 'fold', the held-out fold")
        spec = TrainFoldSpec(
            recipe=recipe(),
            train=manifest("train", body.train),
            fold=body.fold,
            top_k=body.top_k,
            keep_probs=body.keep_probs,
            **common,
        )
    elif kind is JobKind.TRAIN_PREDICT:
        spec = TrainPredictSpec(
            recipe=recipe(),
            train=manifest("train", body.train),
            predict=manifest("predict", body.predict),
            top_k=body.top_k,
            keep_probs=body.keep_probs,
            **common,
        )
    elif kind is JobKind.PREDICT:
        spec = PredictSpec(
            model=model(),
            predict=manifest("predict", body.predict),
            top_k=body.top_k,
            keep_probs=body.keep_probs,
            **common,
        )
    elif kind is JobKind.TRAIN_FINAL:
        spec = TrainFinalSpec(
            recipe=recipe(),
            train=manifest("train", body.train),
            eval=optional("eval", body.eval),
            teachers=[model_ref(session, job_id) for job_id in body.teacher_job_ids],
            **common,
        )
    else:
        assert kind is JobKind.EVALUATE, kind
        spec = EvaluateSpec(
            model=model(),
            eval=manifest("eval", body.eval),
            train=optional("train", body.train),
            top_k=body.top_k,
            **common,
        )
    if isinstance(spec, TrainFoldSpec):
        ids = manifests.result_sample_ids(data_dir, spec.train.sha256, spec.fold)
        if ids.shape[0] == 0:
            raise Invalid(f"no sample of 'train' is in fold {spec.fold}")
    return spec


def _sample_set_manifest(
    session: Session, data_dir: Path, dataset_id: int | None, value: SampleSet, name: str
) -> ManifestRef:
    if value.manifest is not None:
        if any(v is not None for v in (value.sample_ids, value.class_ids, value.junk, value.folds)):
            raise Invalid(f"'{name}': give a manifest or sample fields, not both")
        stored = manifests.load_manifest(data_dir, value.manifest)
        return ManifestRef(sha256=value.manifest, count=len(stored), num_classes=stored.num_classes)
    if dataset_id is None:
        raise Invalid(f"'{name}' selects samples: the job needs a 'dataset_id'")
    dataset = repository.get_dataset(session, dataset_id)
    if dataset is None:
        raise NotFound(f"no dataset {dataset_id}")
    return manifests.dataset_manifest(
        session,
        data_dir,
        dataset=dataset,
        sample_ids=value.sample_ids,
        class_ids=value.class_ids,
        junk=value.junk,
        folds=value.folds,
    )


def model_ref(session: Session, job_id: int) -> ModelRef:
    """The model a succeeded training job uploaded (its ``MODEL_FILES`` artifacts).

    Raises:
        Invalid: the job has not succeeded or uploaded no model.
    """
    job = get_job(session, job_id)
    if job.state is not JobState.SUCCEEDED:
        raise Invalid(f"job {job_id} is {job.state.value}: only a succeeded job's model is usable")
    files = [
        repository.artifact_ref(artifact)
        for artifact in repository.list_artifacts(session, job.id)
        if artifact.name in MODEL_FILES
    ]
    if len(files) != len(MODEL_FILES):
        raise Invalid(f"job {job_id} ({job.kind.value}) has no complete model among its artifacts")
    return ModelRef(job_id=job.id, files=files)


def cancel_job(session: Session, *, job_id: int, now: datetime | None = None) -> Job:
    """Cancels a queued job at once; a leased or running one is cancelled when its worker,
    told by its next heartbeat reply, hands it back (or when its lease expires)."""
    now = now or utcnow()
    job = _locked_job(session, job_id)
    if job.state is JobState.QUEUED:
        _move(job, JobState.CANCELLED, now=now)
    elif job.state.is_held:
        if job.cancel_requested_at is None:
            job.cancel_requested_at = now
            log.info("jobs.job.cancel_requested", job_id=job.id, worker=job.worker)
    elif job.state is not JobState.CANCELLED:
        raise IllegalTransition(f"job {job.id} already {job.state.value}", state=job.state.value)
    return job


def retry_job(session: Session, *, job_id: int, now: datetime | None = None) -> Job:
    """Queues a failed or cancelled job again, with a fresh budget of attempts."""
    now = now or utcnow()
    job = _locked_job(session, job_id)
    _move(job, JobState.QUEUED, now=now)
    job.attempts = 0
    job.not_before_at = None
    job.cancel_requested_at = None
    return job


def job_results(session: Session, job: Job) -> ResultChunk:
    """The job's stored per-sample results as arrays, by sample id."""
    return ingest.read_results(session, job.id)


def artifact_file(session: Session, data_dir: Path, artifact_id: int) -> tuple[JobArtifact, Path]:
    artifact = repository.get_artifact(session, artifact_id)
    if artifact is None:
        raise NotFound(f"no artifact {artifact_id}")
    path = data_dir / artifact.storage_path
    if not path.is_file():
        raise NotFound(f"artifact {artifact_id}'s file is gone")
    return artifact, path


def artifact_by_name(
    session: Session, data_dir: Path, *, job_id: int, name: str
) -> tuple[JobArtifact, Path]:
    artifact = repository.get_artifact_by_name(session, job_id, name)
    if artifact is None:
        raise NotFound(f"job {job_id} has no artifact {name!r}")
    return artifact_file(session, data_dir, artifact.id)


# --- workers ------------------------------------------------------------------------------------


def reap_expired_leases(
    session: Session, *, config: JobSettings, now: datetime | None = None
) -> int:
    """Takes back every job whose lease ran out: queued again after a backoff (the attempt
    counts), failed when it was the last attempt, cancelled when a cancel was pending."""
    now = now or utcnow()
    expired = repository.expired_leases(session, now=now)
    for job in expired:
        log.warning("jobs.lease.expired", job_id=job.id, worker=job.worker, fence=job.fence)
        _append_log(
            job, [f"-- lease {job.fence} expired: {job.worker} stopped sending heartbeats"], config
        )
        _requeue_or_fail(
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
    _move(job, JobState.LEASED, now=now)
    job.fence += 1
    job.attempts += 1
    job.worker = request.worker
    job.lease_token_id = token_id
    job.leased_at = now
    job.started_at = job.heartbeat_at = None
    job.lease_expires_at = now + timedelta(seconds=config.lease_seconds)
    job.not_before_at = None
    job.phase, job.epoch, job.epochs, job.step, job.steps = "leased", 0, 0, 0, 0
    job.images_per_second = 0.0
    job.log_lines = 0
    _append_log(
        job,
        [f"-- lease {job.fence}: attempt {job.attempts}/{job.max_attempts} on {request.worker}"],
        config,
    )
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


def _held(session: Session, job_id: int, fence: int, token_id: int | None) -> Job:
    """The job, row-locked, if the lease ``fence`` of the token ``token_id`` still holds it;
    else LeaseLost and nothing is written."""
    job = _locked_job(session, job_id)
    _check_holder(job, fence, token_id)
    return job


def check_lease(session: Session, *, job_id: int, fence: int, token_id: int | None) -> Job:
    """The job, if this lease holds it (LeaseLost otherwise); for checks made before a body
    is read. Takes no lock: the write that follows checks again."""
    job = get_job(session, job_id)
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
    raise LeaseLost(
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
    job = _held(session, job_id, message.fence, token_id)
    if job.state is JobState.LEASED:
        _move(job, JobState.RUNNING, now=now)
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
        _append_log(job, [f"[{message.log_from - job.log_lines} log lines lost]"], config)
        job.log_lines = message.log_from
    new_lines = message.log[job.log_lines - message.log_from :]
    _append_log(job, new_lines, config)
    job.log_lines += len(new_lines)
    return HeartbeatReply(
        cancel=job.cancel_requested_at is not None, lease_expires_at=job.lease_expires_at
    )


def store_result_chunk(
    session: Session,
    *,
    job_id: int,
    fence: int,
    token_id: int | None,
    index: int,
    data: bytes,
    data_dir: Path,
) -> ResultsStored:
    """Validates and stores one chunk of results; the same chunk again is a no-op, a different
    chunk under the same index replaces it.

    Raises:
        LeaseLost: the fence is stale (nothing is read or written).
        MalformedUpload: truncated, corrupt or invalid bundle, or samples outside the job's set.
    """
    job = _held(session, job_id, fence, token_id)
    if not 0 <= index < MAX_RESULT_CHUNK_INDEX:
        raise MalformedUpload(f"chunk index {index} is out of range")
    try:
        chunk = decode_results(data)
    except BundleError as error:
        raise MalformedUpload(
            f"result chunk {index} of job {job_id} was not stored: {error}"
        ) from error
    _check_result_samples(job, chunk, data_dir)
    digest = hashlib.sha256(data).hexdigest()
    existing = repository.get_result_chunk(session, job.id, index)
    if existing is not None and existing.sha256 == digest:
        return ResultsStored(chunk=index, rows=existing.rows, duplicate=True)
    if existing is not None:
        repository.delete_chunk_results(session, job.id, index)
        existing.sha256, existing.rows, existing.fence = digest, len(chunk), fence
    else:
        session.add(
            JobResultChunk(job_id=job.id, index=index, fence=fence, sha256=digest, rows=len(chunk))
        )
    session.flush()
    ingest.write_results(session, job_id=job.id, chunk_index=index, chunk=chunk)
    log.info("jobs.results.stored", job_id=job.id, chunk=index, rows=len(chunk))
    return ResultsStored(chunk=index, rows=len(chunk), duplicate=False)


def _check_result_samples(job: Job, chunk: ResultChunk, data_dir: Path) -> None:
    spec = parse_spec(job.spec)
    target = result_set(spec)
    if target is None:
        raise MalformedUpload(f"{job.kind.value} jobs report no per-sample results")
    manifest, fold = target
    allowed = manifests.result_sample_ids(data_dir, manifest.sha256, fold)
    found = np.searchsorted(allowed, chunk.sample_id)
    inside = found < allowed.shape[0]
    inside[inside] = allowed[found[inside]] == chunk.sample_id[inside]
    if not inside.all():
        outside = chunk.sample_id[~inside]
        raise MalformedUpload(
            f"{outside.size} samples are not in the job's result set, e.g. {outside[:5].tolist()}"
        )
    top_k = getattr(spec, "top_k", None)
    if chunk.k and top_k is not None and chunk.k != min(top_k, manifest.num_classes):
        raise MalformedUpload(f"top-k results with k={chunk.k}; the job asked for k={top_k}")


def store_artifact(
    session: Session,
    *,
    job_id: int,
    fence: int,
    token_id: int | None,
    name: str,
    upload: UploadedFile,
    claimed_sha256: str | None,
    data_dir: Path,
    config: JobSettings,
) -> JobArtifact:
    """Moves an uploaded file into the job's artifacts (replacing one of the same name).

    Raises:
        LeaseLost: stale fence. MalformedUpload: bad name, or the bytes do not match the
        SHA-256 the worker sent (a truncated or corrupted upload). QuotaExceeded: the job's
        artifacts would exceed ``artifact_quota_bytes``.
    """
    job = _held(session, job_id, fence, token_id)
    if not _ARTIFACT_NAME.fullmatch(name):
        raise MalformedUpload(f"artifact name {name!r}: use letters, digits, '.', '_' and '-'")
    if claimed_sha256 is not None and claimed_sha256.lower() != upload.sha256:
        raise MalformedUpload(
            f"artifact {name!r} arrived with SHA-256 {upload.sha256} and {upload.byte_size} "
            f"bytes, the worker sent {claimed_sha256.lower()}: not stored"
        )
    check_artifact_quota(session, job=job, name=name, size=upload.byte_size, config=config)
    job_dir = data_dir / ARTIFACT_DIR / str(job.id)
    # Named by content too: a rolled-back transaction can leave a stray file, never a row
    # pointing at other bytes than its hash.
    relative = Path(ARTIFACT_DIR) / str(job.id) / str(fence) / f"{upload.sha256[:16]}-{name}"
    target = data_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    upload.path.replace(target)
    for stale in job_dir.iterdir():
        if stale.is_dir() and stale.name.isdigit() and int(stale.name) < fence:
            shutil.rmtree(stale, ignore_errors=True)
    artifact = repository.get_artifact_by_name(session, job.id, name)
    if artifact is None:
        artifact = JobArtifact(job_id=job.id, name=name)
        session.add(artifact)
    artifact.fence = fence
    artifact.media_type = (
        "application/json" if name.endswith(".json") else "application/octet-stream"
    )
    artifact.byte_size = upload.byte_size
    artifact.sha256 = upload.sha256
    artifact.storage_path = relative.as_posix()
    session.flush()
    log.info("jobs.artifact.stored", job_id=job.id, name=name, bytes=upload.byte_size)
    return artifact


def check_artifact_quota(
    session: Session, *, job: Job, name: str, size: int, config: JobSettings
) -> None:
    """QuotaExceeded unless an artifact of ``size`` bytes named ``name`` (replacing one of the
    same name) keeps the job's artifacts within ``artifact_quota_bytes``."""
    others = repository.artifact_bytes(session, job.id, excluding=name)
    if others + size > config.artifact_quota_bytes:
        raise QuotaExceeded(
            f"job {job.id} may store {config.artifact_quota_bytes} bytes of artifacts; "
            f"it has {others} and this one has {size}"
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
    job = _locked_job(session, job_id)
    if job.state is JobState.SUCCEEDED and _same_lease(job, message.fence, token_id):
        return job
    job = _held(session, job_id, message.fence, token_id)
    chunks, highest = repository.result_chunk_stats(session, job.id)
    if chunks != message.chunks or highest != message.chunks - 1:
        raise ResultsIncomplete(
            f"the worker sent {message.chunks} result chunks; the server has {chunks} "
            f"(highest index {highest})"
        )
    rows = repository.count_results(session, job.id)
    if rows != message.rows:
        raise ResultsIncomplete(f"the worker sent {message.rows} results; the server has {rows}")
    _move(job, JobState.SUCCEEDED, now=now)
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
    job = _locked_job(session, job_id)
    if not job.state.is_held and _same_lease(job, message.fence, token_id):
        return job
    job = _held(session, job_id, message.fence, token_id)
    log.warning(
        "jobs.job.attempt_failed", job_id=job.id, worker=job.worker, error=message.error[:500]
    )
    last_line = message.error.strip().splitlines()[-1] if message.error.strip() else "no reason"
    _append_log(job, [f"-- attempt {job.attempts} failed: {last_line}"], config)
    _requeue_or_fail(job, error=message.error, retriable=message.retriable, now=now, cfg=config)
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
    job = _locked_job(session, job_id)
    if not job.state.is_held and _same_lease(job, message.fence, token_id):
        return job
    job = _held(session, job_id, message.fence, token_id)
    _append_log(
        job, [f"-- handed back by {job.worker}: {message.reason or 'no reason given'}"], config
    )
    if job.cancel_requested_at is not None:
        _move(job, JobState.CANCELLED, now=now)
    else:
        job.attempts = max(job.attempts - 1, 0)
        _move(job, JobState.QUEUED, now=now)
        job.not_before_at = None
    log.info("jobs.job.released", job_id=job.id, worker=job.worker, reason=message.reason)
    return job


def store_manifest_upload(data_dir: Path, data: bytes) -> ManifestRef:
    return manifests.store_manifest_bytes(data_dir, data)


def manifest_file(data_dir: Path, sha256: str) -> Path:
    path = manifests.manifest_path(data_dir, sha256)
    if not path.is_file():
        raise manifests.ManifestNotFound(f"no manifest {sha256}")
    return path
