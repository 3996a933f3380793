"""Plain factories for job tests: manifests, jobs, result chunks, and the worker's calls (lease,
heartbeat, upload, complete, fail, release), each committed as its request would be."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.jobs import manifests, service, uploads, worker_service
from app.jobs.config import JobSettings
from app.models import Dataset, ImportFormat, Job, LabelClass, Sample, utcnow
from ml.core.protocol.bundles import JobManifest, ResultChunk, encode_manifest, encode_results
from ml.core.protocol.jobs import JobKind, ManifestRef, TrainPredictSpec
from ml.core.protocol.messages import (
    Complete,
    Fail,
    Heartbeat,
    LeaseGrant,
    LeaseRequest,
    Release,
)

CONFIG = JobSettings(
    lease_seconds=30,
    heartbeat_seconds=5,
    max_attempts=3,
    retry_backoff_seconds=10,
    retry_backoff_max_seconds=100,
    log_tail_lines=5,
)


def synthetic_manifest(
    n: int,
    *,
    first_id: int = 1,
    num_classes: int = 3,
    root: str = "/nowhere",
    folds: Sequence[int] | None = None,
    paths: Sequence[str] | None = None,
) -> JobManifest:
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    return JobManifest(
        root=root,
        sample_ids=ids,
        labels=(ids % num_classes).astype(np.int32),
        folds=np.asarray(folds if folds is not None else [-1] * n, dtype=np.int8),
        sha256=np.zeros((n, 32), dtype=np.uint8),
        paths=list(paths) if paths is not None else [f"c{i % num_classes}/{i}.png" for i in ids],
        class_ids=np.arange(100, 100 + num_classes, dtype=np.int64),
        class_names=[f"class-{c}" for c in range(num_classes)],
    )


def store_manifest(data_dir: Path, n: int = 10, **options: object) -> ManifestRef:
    return manifests.store_manifest(data_dir, synthetic_manifest(n, **options))  # type: ignore[arg-type]


def new_job(
    session: Session,
    data_dir: Path,
    *,
    n: int = 10,
    config: JobSettings = CONFIG,
    priority: int = 0,
    max_attempts: int | None = None,
    top_k: int = 2,
) -> Job:
    """A queued ``train_predict`` job whose result set is ``n`` samples with ids 1..n."""
    ref = store_manifest(data_dir, n)
    spec = TrainPredictSpec(recipe="cifar-small", train=ref, predict=ref, top_k=top_k)
    job = service.create_job(
        session, spec=spec, config=config, priority=priority, max_attempts=max_attempts
    )
    session.commit()
    return job


def lease(
    session: Session,
    *,
    worker: str = "w1",
    now: datetime | None = None,
    config: JobSettings = CONFIG,
    kinds: Sequence[JobKind] = tuple(JobKind),
    device: str = "cpu",
) -> LeaseGrant | None:
    grant = worker_service.lease_job(
        session,
        token_id=None,
        request=LeaseRequest(worker=worker, kinds=list(kinds), device=device),
        config=config,
        now=now,
    )
    session.commit()
    return grant


def chunk_bytes(sample_ids: Sequence[int], *, k: int = 2, scale: float = 0.5) -> bytes:
    ids = np.asarray(sample_ids, dtype=np.int64)
    n = ids.shape[0]
    topk = np.stack([ids % 7 + j for j in range(k)], axis=1).astype(np.int32)
    probs = np.full((n, k), scale / k, dtype=np.float32)
    label = np.full(n, scale, dtype=np.float32)
    return encode_results(ResultChunk(ids, topk, probs, label))


def reload(session: Session, job: Job) -> Job:
    session.expire_all()
    found = session.get(Job, job.id)
    assert found is not None
    return found


def take_over(session: Session, worker: str = "w2") -> LeaseGrant | None:
    """Leases the job again after the current lease expired and its retry backoff passed."""
    later = utcnow() + timedelta(hours=1)
    lease(session, worker="reaper", now=later, kinds=[JobKind.EVALUATE])
    return lease(session, worker=worker, now=later + timedelta(hours=1))


def heartbeat(session: Session, job: Job, fence: int, **fields: object) -> bool:
    reply = worker_service.record_heartbeat(
        session,
        token_id=None,
        job_id=job.id,
        message=Heartbeat(fence=fence, **fields),
        config=CONFIG,  # type: ignore[arg-type]
    )
    session.commit()
    return reply.cancel


def upload_manifest(
    client: TestClient | httpx.Client, headers: dict[str, str], manifest: JobManifest
) -> str:
    response = client.post(
        "/api/jobs/manifests", content=encode_manifest(manifest), headers=headers
    )
    assert response.status_code == 201, response.text
    sha: str = response.json()["manifest"]["sha256"]
    return sha


def create_predict_job(
    client: TestClient | httpx.Client,
    headers: dict[str, str],
    n: int = 6,
    *,
    sha: str | None = None,
) -> int:
    """A train_predict job through the API over ``sha``, a stored manifest, or else over a
    synthetic manifest of ``n`` samples uploaded first."""
    sha = sha or upload_manifest(client, headers, synthetic_manifest(n))
    body = {
        "kind": "train_predict",
        "recipe": "cifar-small",
        "train": {"manifest": sha},
        "predict": {"manifest": sha},
        "top_k": 2,
    }
    response = client.post("/api/jobs", json=body, headers=headers)
    assert response.status_code == 201, response.text
    job_id: int = response.json()["id"]
    return job_id


def complete(session: Session, job: Job, message: Complete) -> None:
    worker_service.complete_job(session, token_id=None, job_id=job.id, message=message)
    session.commit()


def fail(session: Session, job: Job, message: Fail, *, now: datetime | None = None) -> None:
    worker_service.fail_job(
        session, token_id=None, job_id=job.id, message=message, config=CONFIG, now=now
    )
    session.commit()


def release(session: Session, job: Job, message: Release) -> None:
    worker_service.release_job(
        session, token_id=None, job_id=job.id, message=message, config=CONFIG
    )
    session.commit()


def upload(session: Session, job: Job, fence: int, index: int, data: bytes, data_dir: Path) -> bool:
    stored = uploads.store_result_chunk(
        session,
        token_id=None,
        job_id=job.id,
        fence=fence,
        index=index,
        data=data,
        data_dir=data_dir,
    )
    session.commit()
    return stored.duplicate


def tiny_dataset(
    session: Session, *, root: str = "/nowhere", n: int = 6
) -> tuple[Dataset, list[Sample]]:
    """Classes cat and dog; ``n`` usable samples alternating cat, dog, then a missing cat."""
    dataset = Dataset(name="tiny", root=root, source=root, source_format=ImportFormat.IMAGEFOLDER)
    session.add(dataset)
    session.flush()
    classes = [LabelClass(dataset_id=dataset.id, name=name) for name in ("cat", "dog")]
    session.add_all(classes)
    session.flush()
    samples = [
        Sample(
            dataset_id=dataset.id,
            path=f"{classes[i % 2].name}/{i}.png",
            class_id=classes[i % 2].id,
            sha256=f"{i:064x}",
        )
        for i in range(n)
    ]
    samples.append(
        Sample(
            dataset_id=dataset.id,
            path="cat/bad.png",
            class_id=classes[0].id,
            missing=True,
            sha256="f" * 64,
        )
    )
    session.add_all(samples)
    session.flush()
    return dataset, samples
