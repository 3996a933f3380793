"""Real processes for end-to-end job tests: a uvicorn server on 127.0.0.1 and worker processes.

Everything talks over real HTTP; the database is a migrated SQLite or PostgreSQL database made
by the ``db_url`` fixture; leases are short (a few seconds) so expiry happens within a test.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from app.auth import service as auth_service
from app.datasets import grants
from app.db import transaction
from app.models import Dataset, ImportFormat, LabelClass, Role, Sample, TokenScope
from tests.conftest import TEST_PASSWORD, TEST_SECRET

ROOT = Path(__file__).resolve().parents[3]
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


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
        engineer, _ = auth_service.create_user(
            session, username="eng", role=Role.ENGINEER, password=TEST_PASSWORD
        )
        grants.grant(session, user=engineer, dataset=None, by=None)
        _, api = auth_service.create_token(session, user=engineer, name="test")
        _, worker = auth_service.create_token(
            session, user=engineer, name="workers", scope=TokenScope.WORKER
        )
    return api, worker


@dataclass
class Server:
    """``uvicorn app.main:create_app`` on a free port of 127.0.0.1."""

    db_url: str
    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "THRESHER_DATABASE_URL": self.db_url,
            "THRESHER_DATA_DIR": str(self.data_dir),
            "THRESHER_SECRET_KEY": TEST_SECRET,
            "THRESHER_LOG_FORMAT": "console",
            "THRESHER_JOBS_LEASE_SECONDS": str(LEASE_SECONDS),
            "THRESHER_JOBS_HEARTBEAT_SECONDS": "0.5",
            "THRESHER_JOBS_RETRY_BACKOFF_SECONDS": "0",
            **self.extra_env,
        }

    def start(self) -> None:
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "app.main:create_app",
                    "--factory",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                ],
                cwd=ROOT,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._healthy, timeout=60, what="the server to answer")

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the server exited: {self.log()}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path else ""


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_worker(
    server: Server,
    token: str,
    tmp_path: Path,
    name: str,
    *extra: str,
    threads: int = 1,
    embeddings: Path | None = None,
) -> Worker:
    """A CPU worker process with ``threads`` torch threads, logging to worker-NAME.log, its
    embedding cache in ``embeddings`` (default: the user's)."""
    cache = tmp_path / f"cache-{name}"
    log_path = tmp_path / f"worker-{name}.log"
    env = {**os.environ, "THRESHER_WORKER_TOKEN": token, "OMP_NUM_THREADS": str(threads)}
    if embeddings is not None:
        env["THRESHER_EMBEDDINGS_DIR"] = str(embeddings)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ml.worker",
                "--server",
                server.url,
                "--device",
                "cpu",
                "--name",
                name,
                "--cache-dir",
                str(cache),
                "--poll-max",
                "0.5",
                # Exit with this process, should it die without stopping the worker.
                "--watch-parent",
                str(os.getpid()),
                *extra,
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Worker(process, log_path)


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
        self, job_id: int, states: set[str], *, timeout: float, workers: list[Worker]
    ) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["state"] in states else None

        try:
            found: dict[str, Any] = wait_for(
                reached, timeout=timeout, what=f"job {job_id} to be {states}"
            )
        except AssertionError as error:
            logs = "\n\n".join(worker.log() for worker in workers)
            raise AssertionError(
                f"{error}; job: {self.job(job_id)}\nworker logs:\n{logs}"
            ) from None
        return found

    def wait_running(self, job_id: int, *, timeout: float, workers: list[Worker]) -> dict[str, Any]:
        """Until the job is training (a step reported)."""

        def training() -> dict[str, Any] | None:
            job = self.job(job_id)
            return (
                job
                if job["state"] == "running" and job["phase"] == "train" and job["step"] > 0
                else None
            )

        try:
            found: dict[str, Any] = wait_for(
                training, timeout=timeout, what=f"job {job_id} to train"
            )
        except AssertionError as error:
            logs = "\n\n".join(worker.log() for worker in workers)
            raise AssertionError(
                f"{error}; job: {self.job(job_id)}\nworker logs:\n{logs}"
            ) from None
        return found
