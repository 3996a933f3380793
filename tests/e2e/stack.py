"""The real-process stack of the end-to-end runs and their real data, shared by the end-to-end
tests (through the fixtures of ``conftest.py``) and the pipeline benchmark.

A uvicorn server (with its pipeline reconciler), a CPU worker process, and simulated annotators
over HTTP; labelled sets of real images (CIFAR-10 with CIFAR-10N labels, Caltech-101 with its
BACKGROUND_Google images as junk) written as a manifest of the labels to import and a truth file.
The callers check that the data in ``../shared/data`` is there before calling in here.
"""

from __future__ import annotations

import csv
import os
import random
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker

from app.auth import service as auth_service
from app.db import transaction
from app.models import Role, TokenScope
from app.pipeline.simulate import SimulationStats, Simulator, load_truth
from tests.app.jobs.processes import Server, Worker, start_worker, wait_for
from tests.conftest import TEST_PASSWORD

# --- data ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RealSet:
    """Images under ``root``, the manifest to import (``path,label``, paths relative to
    ``root``, the given labels) and the truth (``path,clean,junk``)."""

    root: Path
    manifest: Path
    truth: Path

    def rows(self) -> dict[str, dict[str, str]]:
        with self.truth.open(newline="") as handle:
            return {row["path"]: row for row in csv.DictReader(handle)}

    def given(self) -> dict[str, str]:
        with self.manifest.open(newline="") as handle:
            return {row["path"]: row["label"] for row in csv.DictReader(handle)}


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_labelled_set(
    out_dir: Path, root: Path, items: Sequence[tuple[str, str, str | None]]
) -> RealSet:
    """Writes ``noisy.csv`` and ``truth.csv`` into ``out_dir`` for ``items``: (path relative to
    ``root``, given label, clean label or None for junk)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest, truth = out_dir / "noisy.csv", out_dir / "truth.csv"
    _write_csv(manifest, ["path", "label"], [[path, given] for path, given, _ in items])
    _write_csv(
        truth,
        ["path", "clean", "junk"],
        [[path, clean or "", "0" if clean else "1"] for path, _, clean in items],
    )
    return RealSet(root, manifest, truth)


def extract(archive: Path, root: Path, names: Iterable[str]) -> None:
    """Extracts the members ``names`` of ``archive`` into ``root``."""
    wanted = set(names)
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name in wanted]
        tar.extractall(root, members=members, filter="data")


def cifar_first_per_class(
    labels_csv: Path,
    archive: Path,
    root: Path,
    *,
    per_class: int,
    column: str,
    clean_column: str = "clean",
) -> RealSet:
    """The first ``per_class`` CIFAR-10 images of each class (original order) of a split,
    extracted into ``root``, labelled with ``column`` (a CIFAR-10N column for the training
    split); ``clean_column`` holds the true class."""
    counts: dict[str, int] = {}
    chosen: dict[str, dict[str, str]] = {}
    with labels_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if counts.get(row[clean_column], 0) < per_class:
                counts[row[clean_column]] = counts.get(row[clean_column], 0) + 1
                chosen[row["path"]] = row
    extract(archive, root, chosen)
    items = [(path, chosen[path][column], chosen[path][clean_column]) for path in sorted(chosen)]
    return write_labelled_set(root, root, items)


BACKGROUND = "BACKGROUND_Google"


def caltech_junk_mix(
    archive: Path,
    root: Path,
    *,
    classes: Sequence[str] | None,
    per_class: int,
    background: int,
    seed: int = 7,
) -> RealSet:
    """The first ``per_class`` images of each Caltech-101 class of ``classes`` (None: all of
    them but ``Faces``, which holds the photos of ``Faces_easy`` at another crop), and the first
    ``background`` BACKGROUND_Google images filed under random classes of them as junk,
    extracted into ``root``."""
    with tarfile.open(archive) as tar:
        members = [m.name for m in tar.getmembers() if m.isfile() and m.name.count("/") == 2]
    by_class: dict[str, list[str]] = {}
    for name in members:
        by_class.setdefault(name.split("/")[1], []).append(name)
    names = (
        list(classes)
        if classes is not None
        else sorted(c for c in by_class if c not in (BACKGROUND, "Faces"))
    )
    picked = [path for name in names for path in sorted(by_class[name])[:per_class]]
    junk = sorted(by_class[BACKGROUND])[:background]
    extract(archive, root, picked + junk)
    rng = random.Random(seed)
    items: list[tuple[str, str, str | None]] = [
        (path, path.split("/")[1], path.split("/")[1]) for path in picked
    ]
    items += [(path, rng.choice(names), None) for path in junk]
    return write_labelled_set(root, root, items)


# --- processes ----------------------------------------------------------------------------------


@dataclass
class PipelineServer(Server):
    """The server of the end-to-end runs: its reconciler every half second, imports in two
    processes, leases long enough for a loaded CPU."""

    lease_seconds: float = 60.0
    import_roots: tuple[Path, ...] = (Path(tempfile.gettempdir()),)

    def env(self) -> dict[str, str]:
        return {
            **super().env(),
            "THRESHER_IMPORT_ROOTS": os.pathsep.join(str(root) for root in self.import_roots),
            "THRESHER_PIPELINE_RECONCILE_SECONDS": "0.5",
            "THRESHER_IMPORT_PROCESSES": "2",
            "THRESHER_JOBS_LEASE_SECONDS": str(self.lease_seconds),
            "THRESHER_JOBS_HEARTBEAT_SECONDS": str(min(2.0, self.lease_seconds / 5)),
        }


@dataclass
class Stack:
    server: PipelineServer
    workers: list[Worker]
    admin_token: str
    worker_token: str
    work_dir: Path
    embeddings: Path
    http: httpx.Client
    factory: sessionmaker[Session]
    simulations: list[SimulationStats] = field(default_factory=list)

    def start_worker(
        self, name: str, *, threads: int = 2, embeddings: Path | None = None
    ) -> Worker:
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
            session, username="boss", role=Role.ADMIN, password=TEST_PASSWORD
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
