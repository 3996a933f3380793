"""Real processes for end-to-end job tests: the tests' server (:class:`Server`, short leases), a
dataset and tokens to give it, and the engineer API that creates and watches jobs.

The processes themselves are :mod:`bench.harness.processes`. Everything talks over real HTTP;
the database is a migrated SQLite or PostgreSQL database made by the ``db_url`` fixture; leases
are short (a few seconds) so expiry happens within a test.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from app.auth import service as auth_service
from app.db import transaction
from app.models import Dataset, ImportFormat, LabelClass, Role, Sample, TokenScope
from bench.harness.processes import ServerProcess, WorkerProcess, wait_for
from tests.conftest import TEST_SECRET, add_user

LEASE_SECONDS = 3.0


#: A training recipe small enough for a CPU test; ``epochs`` sets how long a job runs.
def tiny_recipe(epochs: int) -> dict[str, Any]:
    return {
        "name": "tiny-test",
        "model": {"name": "cifar_convnet_s"},
        "image_size": 32,
        "epochs": epochs,
        "batch_size": 8,
        "eval_batch_size": 16,
        "optimizer": {"name": "sgd", "lr": 0.05},
        "loader_workers": 0,
        "channels_last": False,
        "seed": 1,
    }


def write_images(root: Path, n: int, *, seed: int = 0) -> list[Path]:
    """``n`` small PNGs in two classes that a model can tell apart (reddish / bluish)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        name = ("red", "blue")[i % 2]
        pixels = rng.integers(0, 90, size=(32, 32, 3), dtype=np.uint8)
        pixels[..., 0 if name == "red" else 2] += 160
        path = root / name / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def add_dataset(
    factory: sessionmaker[Session], root: Path, paths: list[Path]
) -> tuple[int, list[int]]:
    """Registers ``paths`` as a dataset's probed samples, as an import would have."""
    with transaction(factory) as session:
        dataset = Dataset(
            name=f"set-{root.name}",
            root=str(root),
            source=str(root),
            source_format=ImportFormat.IMAGEFOLDER,
        )
        session.add(dataset)
        session.flush()
        classes = {name: LabelClass(dataset_id=dataset.id, name=name) for name in ("blue", "red")}
        session.add_all(classes.values())
        session.flush()
        samples = [
            Sample(
                dataset_id=dataset.id,
                path=path.relative_to(root).as_posix(),
                class_id=classes[path.parent.name].id,
                byte_size=path.stat().st_size,
                sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                width=32,
                height=32,
                mode="RGB",
                channels=3,
                image_format="PNG",
            )
            for path in paths
        ]
        session.add_all(samples)
        session.flush()
        return dataset.id, [sample.id for sample in samples]


def make_tokens(factory: sessionmaker[Session]) -> tuple[str, str]:
    """(engineer API token, worker token)."""
    with transaction(factory) as session:
        engineer = add_user(session, username="eng", role=Role.ENGINEER)
        _, api = auth_service.create_token(session, user=engineer, name="test")
        _, worker = auth_service.create_token(
            session, user=engineer, name="workers", scope=TokenScope.WORKER
        )
    return api, worker


@dataclass
class Server(ServerProcess):
    """The tests' server: leases of :data:`LEASE_SECONDS`, heartbeats every half second, no
    back-off before a retry, console logs."""

    secret_key: str = TEST_SECRET

    def config(self) -> dict[str, str]:
        return {
            **super().config(),
            "THRESHER_LOG_FORMAT": "console",
            "THRESHER_JOBS_LEASE_SECONDS": str(LEASE_SECONDS),
            "THRESHER_JOBS_HEARTBEAT_SECONDS": "0.5",
            "THRESHER_JOBS_RETRY_BACKOFF_SECONDS": "0",
        }


class Api:
    """The engineer API of a running server."""

    def __init__(self, server: Server, token: str) -> None:
        self.server = server
        self.http = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post("/api/jobs", json=body)
        assert response.status_code == 201, response.text
        job: dict[str, Any] = response.json()
        return job

    def job(self, job_id: int) -> dict[str, Any]:
        for _ in range(50):
            try:
                response = self.http.get(f"/api/jobs/{job_id}")
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            assert response.status_code == 200, response.text
            job: dict[str, Any] = response.json()
            return job
        raise AssertionError("the server does not answer")

    def wait_state(
        self, job_id: int, states: set[str], *, timeout: float, workers: list[WorkerProcess]
    ) -> dict[str, Any]:
        return self._wait(
            job_id,
            lambda job: job["state"] in states,
            what=f"job {job_id} to be {states}",
            timeout=timeout,
            workers=workers,
        )

    def wait_running(
        self, job_id: int, *, timeout: float, workers: list[WorkerProcess]
    ) -> dict[str, Any]:
        """Until the job is training (a step reported)."""
        return self._wait(
            job_id,
            lambda job: job["state"] == "running" and job["phase"] == "train" and job["step"] > 0,
            what=f"job {job_id} to train",
            timeout=timeout,
            workers=workers,
        )

    def _wait(
        self,
        job_id: int,
        done: Callable[[dict[str, Any]], bool],
        *,
        what: str,
        timeout: float,
        workers: list[WorkerProcess],
    ) -> dict[str, Any]:
        """The job once ``done`` holds; a timeout's error shows the job and the workers' logs."""

        def reached() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if done(job) else None

        try:
            found: dict[str, Any] = wait_for(reached, timeout=timeout, what=what)
        except AssertionError as error:
            logs = "\n\n".join(worker.log() for worker in workers)
            raise AssertionError(
                f"{error}; job: {self.job(job_id)}\nworker logs:\n{logs}"
            ) from None
        return found
