"""The cleaning loop's whole stack with real processes, as the end-to-end tests (through the
fixtures of ``tests/e2e/conftest.py``) and the pipeline benchmark run it: a uvicorn server with
its pipeline reconciler, CPU worker processes, and simulated annotators over HTTP.
"""

from __future__ import annotations

import csv
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker

from app.auth import service as auth_service
from app.db import transaction
from app.models import Dataset, Role, TokenScope
from app.pipeline import export, service
from app.pipeline.simulate import SimulationStats, Simulator
from app.pipeline.truth import load_truth
from bench.harness.processes import ServerProcess, WorkerProcess, start_worker, wait_for

#: The admin's password (the stack signs in with API tokens; nobody types it).
ADMIN_PASSWORD = "stack admin password"  # noqa: S105


@dataclass
class PipelineServer(ServerProcess):
    """The server of the end-to-end runs: its reconciler every half second, imports in two
    processes, leases long enough for a loaded CPU, no back-off before a retry, console logs."""

    lease_seconds: float = 60.0
    import_roots: tuple[Path, ...] = (Path(tempfile.gettempdir()),)

    def config(self) -> dict[str, str]:
        return {
            **super().config(),
            "THRESHER_LOG_FORMAT": "console",
            "THRESHER_JOBS_RETRY_BACKOFF_SECONDS": "0",
            "THRESHER_IMPORT_ROOTS": os.pathsep.join(str(root) for root in self.import_roots),
            "THRESHER_PIPELINE_RECONCILE_SECONDS": "0.5",
            "THRESHER_IMPORT_PROCESSES": "2",
            "THRESHER_JOBS_LEASE_SECONDS": str(self.lease_seconds),
            "THRESHER_JOBS_HEARTBEAT_SECONDS": str(min(2.0, self.lease_seconds / 5)),
        }


@dataclass
class Stack:
    """A running stack: its server and workers, the admin's API client (``http``), the
    database's session factory, and what each simulated annotator did."""

    server: PipelineServer
    workers: list[WorkerProcess]
    admin_token: str
    worker_token: str
    work_dir: Path
    embeddings: Path
    http: httpx.Client
    factory: sessionmaker[Session]
    simulations: list[SimulationStats] = field(default_factory=list)

    def start_worker(
        self, name: str, *, threads: int = 2, embeddings: Path | None = None
    ) -> WorkerProcess:
        """A CPU worker with ``threads`` torch threads and its embedding cache in
        ``embeddings`` (default: the stack's; workers sharing one are as on one machine)."""
        worker = start_worker(
            self.server,
            self.worker_token,
            self.work_dir,
            name,
            threads=threads,
            embeddings=embeddings or self.embeddings,
        )
        self.workers.append(worker)
        return worker

    def worker_logs(self) -> str:
        return "\n\n".join(worker.log() for worker in self.workers)

    def import_dataset(
        self, name: str, manifest: Path, *, root: Path | None = None, timeout: float = 120
    ) -> int:
        """Imports a manifest (its paths relative to ``root``, default the manifest's folder)."""
        body = {"name": name, "path": str(manifest)}
        if root is not None:
            body["root"] = str(root)
        response = self.http.post("/api/datasets", json=body)
        assert response.status_code == 202, response.text
        accepted = response.json()
        run_id = accepted["import_run"]["id"]

        def finished() -> dict[str, Any] | None:
            run: dict[str, Any] = self.http.get(f"/api/imports/{run_id}").json()
            return run if run["status"] != "running" else None

        run = wait_for(finished, timeout=timeout, what=f"the import of {name}")
        assert run["status"] == "succeeded", run
        return int(accepted["dataset"]["id"])

    def simulate(
        self,
        dataset: str,
        truth: Path,
        *,
        error_rate: float,
        class_error_rate: float | None = None,
        annotators: int = 2,
    ) -> Callable[[], None]:
        """Starts simulated annotators following the pipeline in a thread; returns a join."""
        stop = threading.Event()
        errors: list[BaseException] = []

        def play() -> None:
            try:
                simulator = Simulator(
                    client_factory=lambda: httpx.Client(base_url=self.server.url, timeout=60),
                    token=self.admin_token,
                    dataset=dataset,
                    truth=load_truth(truth, column="clean"),
                    annotators=annotators,
                    error_rate=error_rate,
                    class_error_rate=class_error_rate,
                    seed=1,
                )
                try:
                    while not stop.is_set():
                        if not simulator.work_once():
                            stop.wait(0.3)
                    self.simulations.append(simulator.stats)
                finally:
                    simulator.close()
            except BaseException as error:  # reported by join()
                errors.append(error)

        thread = threading.Thread(target=play, name="simulated-annotators", daemon=True)
        thread.start()

        def join() -> None:
            stop.set()
            thread.join(timeout=60)
            if errors:
                raise errors[0]

        return join

    def status(self, dataset_id: int) -> dict[str, Any]:
        status: dict[str, Any] = self.http.get(f"/api/pipelines/{dataset_id}").json()
        return status

    def wait_until(
        self,
        dataset_id: int,
        done: Callable[[dict[str, Any]], bool],
        *,
        timeout: float,
        on_poll: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Polls the pipeline's status until ``done`` says so; a failed round or auto mode
        stopping fails. ``on_poll`` sees every status read."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(dataset_id)
            if on_poll is not None:
                on_poll(status)
            failed = [r for r in status["rounds"] if r["state"] == "failed"]
            if failed or not status["auto"]:
                raise AssertionError(
                    f"the loop stopped: {status['note']} {failed}\n{self.worker_logs()}"
                )
            if done(status):
                return status
            time.sleep(1)
        last = self.http.get(f"/api/pipelines/{dataset_id}").text
        raise AssertionError(
            f"the loop did not finish in {timeout:.0f}s: {last}\n{self.worker_logs()}"
        )

    def wait_done(
        self,
        dataset_id: int,
        *,
        timeout: float,
        on_poll: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Until the pipeline's stage is done (see :meth:`wait_until`)."""
        return self.wait_until(
            dataset_id,
            lambda status: status["stage"] == "done" and status["open_round"] is None,
            timeout=timeout,
            on_poll=on_poll,
        )

    def export(self, dataset_id: int, out: Path, *, require_model: bool) -> list[dict[str, str]]:
        """Exports the dataset into ``out`` as ``thresher export`` does; returns the rows of the
        exported ``manifest.csv``."""
        with transaction(self.factory) as session:
            dataset = session.get_one(Dataset, dataset_id)
            export.export_dataset(
                session,
                pipeline=service.get_pipeline(session, dataset),
                dataset=dataset,
                out_dir=out,
                data_dir=self.server.data_dir,
                require_model=require_model,
            )
        with (out / "manifest.csv").open(newline="") as handle:
            return list(csv.DictReader(handle))


@contextmanager
def running_stack(
    db_url: str,
    factory: sessionmaker[Session],
    work_dir: Path,
    *,
    worker: bool = True,
    lease_seconds: float = 60.0,
    embeddings: Path | None = None,
    import_roots: tuple[Path, ...] = (Path(tempfile.gettempdir()),),
) -> Iterator[Stack]:
    """An admin with an API token and a worker token in the (migrated, empty) database at
    ``db_url``, the server on it and (unless ``worker`` is false) one CPU worker with both
    cores; logs and data under ``work_dir``, the workers' embedding cache in ``embeddings``
    (default: under ``work_dir``). The server imports from ``import_roots``."""
    with transaction(factory) as session:
        admin, _ = auth_service.create_user(
            session, username="boss", role=Role.ADMIN, password=ADMIN_PASSWORD
        )
        _, api_token = auth_service.create_token(session, user=admin, name="e2e")
        _, worker_token = auth_service.create_token(
            session, user=admin, name="worker", scope=TokenScope.WORKER
        )
    server = PipelineServer(
        db_url=db_url,
        data_dir=work_dir / "data",
        lease_seconds=lease_seconds,
        import_roots=import_roots,
    )
    server.start()
    http = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {api_token}"}, timeout=60
    )
    stack = Stack(
        server,
        [],
        api_token,
        worker_token,
        work_dir,
        embeddings or work_dir / "embeddings",
        http,
        factory,
    )
    try:
        if worker:
            stack.start_worker("e2e")
        yield stack
    finally:
        http.close()
        for running in stack.workers:
            running.stop()
        server.stop()
