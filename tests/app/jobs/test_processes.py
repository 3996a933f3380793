"""End to end with real processes: a uvicorn server on 127.0.0.1, worker processes training a
tiny model on the CPU, and the faults: a worker killed mid-job, a server restart, SIGTERM, a
cancel, workers racing for one job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.jobs.local_workers import active_local_tokens, start_local_workers
from app.settings import Settings
from bench.harness.processes import ROOT, WorkerProcess, start_worker, wait_for
from ml.core.protocol.messages import FENCE_HEADER
from tests.app.jobs.factories import chunk_bytes
from tests.app.jobs.processes import (
    Api,
    Server,
    add_dataset,
    make_tokens,
    tiny_recipe,
    write_images,
)
from tests.conftest import TEST_SECRET

pytestmark = pytest.mark.slow

#: Epochs of a job that must still be running when a test interferes (several seconds here).
LONG = 40

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
POSTGRES = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


@dataclass
class Stack:
    server: Server
    api: Api
    worker_token: str
    dataset_id: int
    sample_ids: list[int]
    images: Path
    tmp_path: Path
    workers: list[WorkerProcess]

    def worker(self, name: str, *extra: str) -> WorkerProcess:
        worker = start_worker(self.server, self.worker_token, self.tmp_path, name, *extra)
        self.workers.append(worker)
        return worker

    def train_predict(self, epochs: int, **extra: object) -> int:
        job = self.api.create(
            {
                "kind": "train_predict",
                "dataset_id": self.dataset_id,
                "recipe": tiny_recipe(epochs),
                "train": {},
                "predict": {},
                "top_k": 2,
                **extra,
            }
        )
        job_id: int = job["id"]
        return job_id


@pytest.fixture
def stack(db_url: str, session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[Stack]:
    images = tmp_path / "images"
    paths = write_images(images, 24)
    dataset_id, sample_ids = add_dataset(session_factory, images, paths)
    api_token, worker_token = make_tokens(session_factory)
    server = Server(db_url=db_url, data_dir=tmp_path / "data")
    server.start()
    stack = Stack(
        server, Api(server, api_token), worker_token, dataset_id, sample_ids, images, tmp_path, []
    )
    try:
        yield stack
    finally:
        for worker in stack.workers:
            worker.stop()
        stack.api.http.close()
        server.stop()


@SQLITE
def test_a_worker_trains_and_predicts_end_to_end_fetching_images_from_the_server(
    stack: Stack,
) -> None:
    # The worker cannot see the dataset's directory: it fetches every image by sample id.
    worker = stack.worker("solo", "--path-map", f"{stack.images}=/nonexistent")
    job_id = stack.train_predict(epochs=2)
    job = stack.api.wait_state(job_id, {"succeeded", "failed"}, timeout=120, workers=[worker])
    assert job["state"] == "succeeded", job
    assert job["result_rows"] == len(stack.sample_ids)
    assert [m["epoch"] for m in job["metrics"]] == [1, 2]
    assert {"train_loss", "train_accuracy"} <= set(job["metrics"][0]["values"])
    assert {a["name"] for a in job["artifacts"]} >= {"model.safetensors", "model_config.json"}
    timings = job["summary"]["timings"]
    assert timings["first_step_at"] >= timings["leased_at"]
    assert "worker.images.remote" in worker.log()

    # A later job predicts with that model, downloaded as the job's artifacts.
    predict = stack.api.create(
        {"kind": "predict", "dataset_id": stack.dataset_id, "predict": {}, "model_job_id": job_id}
    )
    done = stack.api.wait_state(
        predict["id"], {"succeeded", "failed"}, timeout=60, workers=[worker]
    )
    assert done["state"] == "succeeded", done
    results = stack.api.http.get(f"/api/jobs/{predict['id']}/results")
    assert results.status_code == 200


@POSTGRES
def test_a_killed_workers_job_is_finished_by_another_and_its_late_upload_is_refused(
    stack: Stack,
) -> None:
    workers = {name: stack.worker(name) for name in ("one", "two")}
    job_id = stack.train_predict(epochs=LONG)
    holder = stack.api.wait_running(job_id, timeout=90, workers=stack.workers)["worker"]
    (rescuer,) = set(workers) - {holder}
    workers[holder].process.send_signal(signal.SIGKILL)
    workers[holder].process.wait()
    assert stack.api.job(job_id)["state"] == "running"

    job = stack.api.wait_state(job_id, {"succeeded", "failed"}, timeout=180, workers=stack.workers)
    assert job["state"] == "succeeded", job
    assert (job["worker"], job["fence"], job["attempts"]) == (rescuer, 2, 2)

    # The killed worker's upload, arriving late with its old fence, is refused.
    late = httpx.put(
        f"{stack.server.url}/api/worker/jobs/{job_id}/results/0",
        content=chunk_bytes(stack.sample_ids[:2]),
        headers={"Authorization": f"Bearer {stack.worker_token}", FENCE_HEADER: "1"},
    )
    assert late.status_code == 409
    assert stack.api.job(job_id)["result_rows"] == len(stack.sample_ids)


@SQLITE
def test_the_worker_rides_out_a_server_restart(stack: Stack) -> None:
    worker = stack.worker("steady")
    job_id = stack.train_predict(epochs=LONG)
    stack.api.wait_running(job_id, timeout=90, workers=[worker])
    stack.server.stop()
    wait_for(
        lambda: "worker.heartbeat.failed" in worker.log(), timeout=30, what="a failed heartbeat"
    )
    stack.server.start()
    job = stack.api.wait_state(job_id, {"succeeded", "failed"}, timeout=180, workers=[worker])
    assert job["state"] == "succeeded", job
    assert job["fence"] == 1
    assert job["result_rows"] == len(stack.sample_ids)


@SQLITE
def test_sigterm_hands_the_job_back_without_using_an_attempt(stack: Stack) -> None:
    worker = stack.worker("leaving")
    job_id = stack.train_predict(epochs=LONG)
    stack.api.wait_running(job_id, timeout=90, workers=[worker])
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=60) == 0
    job = stack.api.job(job_id)
    assert (job["state"], job["attempts"]) == ("queued", 0), job
    assert "handed back by leaving" in "\n".join(job["log_tail"])


@SQLITE
def test_a_worker_whose_parent_dies_hands_its_job_back_and_exits(stack: Stack) -> None:
    # A parent process that starts the worker watching it (as `thresher serve` does), then dies.
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, subprocess, sys, time\n"
            "worker = subprocess.Popen([sys.executable, '-m', 'ml.worker', *sys.argv[1:],"
            " '--watch-parent', str(os.getpid())])\n"
            "print(worker.pid, flush=True)\n"
            "time.sleep(3600)\n",
            "--server",
            stack.server.url,
            "--device",
            "cpu",
            "--name",
            "orphan",
            "--cache-dir",
            str(stack.tmp_path / "cache-orphan"),
            "--poll-max",
            "0.5",
        ],
        cwd=ROOT,
        env={**os.environ, "THRESHER_WORKER_TOKEN": stack.worker_token, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
    )
    assert parent.stdout is not None
    worker_pid = int(parent.stdout.readline())
    try:
        job_id = stack.train_predict(epochs=LONG)
        stack.api.wait_state(job_id, {"running"}, timeout=90, workers=[])
        parent.kill()
        parent.wait()
        wait_for(lambda: not _alive(worker_pid), timeout=60, what="the orphaned worker to exit")
        job = stack.api.job(job_id)
        assert (job["state"], job["attempts"]) == ("queued", 0), job
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
        if _alive(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


@SQLITE
def test_a_cancelled_job_stops_at_the_next_step(stack: Stack) -> None:
    worker = stack.worker("busy")
    job_id = stack.train_predict(epochs=LONG)
    stack.api.wait_running(job_id, timeout=90, workers=[worker])
    assert stack.api.http.post(f"/api/jobs/{job_id}/cancel").status_code == 200
    job = stack.api.wait_state(job_id, {"cancelled"}, timeout=60, workers=[worker])
    assert job["result_rows"] == 0
    assert worker.process.poll() is None  # the worker goes on to the next job


@SQLITE
def test_two_workers_racing_for_one_job_exactly_one_gets_it(stack: Stack) -> None:
    stack.train_predict(epochs=1)
    statuses: list[int] = []
    barrier = threading.Barrier(6)

    def race(index: int) -> None:
        with httpx.Client(base_url=stack.server.url, timeout=30) as client:
            barrier.wait()
            response = client.post(
                "/api/worker/lease",
                json={"worker": f"racer-{index}", "kinds": ["train_predict"], "device": "cpu"},
                headers={"Authorization": f"Bearer {stack.worker_token}"},
            )
            statuses.append(response.status_code)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [204] * 5


@SQLITE
def test_a_fold_job_runs_on_two_processes_with_gloo_ddp(stack: Stack) -> None:
    worker = stack.worker("ddp", "--procs", "2")
    job = stack.api.create(
        {
            "kind": "train_fold",
            "dataset_id": stack.dataset_id,
            "recipe": tiny_recipe(2),
            "train": {"folds": [i % 3 for i in range(len(stack.sample_ids))]},
            "fold": 1,
            "top_k": 2,
        }
    )
    done = stack.api.wait_state(job["id"], {"succeeded", "failed"}, timeout=180, workers=[worker])
    assert done["state"] == "succeeded", (done, worker.log())
    assert done["result_rows"] == len(stack.sample_ids) // 3
    assert [m["epoch"] for m in done["metrics"]] == [1, 2]
    launch = [line for line in worker.log().splitlines() if "worker.ddp.launch" in line]
    assert launch and "device=cpu" in launch[0] and "procs=2" in launch[0]


@SQLITE
def test_local_workers_run_jobs_and_their_token_dies_with_them(stack: Stack, db_url: str) -> None:
    settings = Settings(
        data_dir=stack.server.data_dir,
        database_url=db_url,
        secret_key=TEST_SECRET,
        host="127.0.0.1",
        port=stack.server.port,
    )
    handle = start_local_workers(settings, 1, device="cpu")
    try:
        assert active_local_tokens(settings) == 1
        job_id = stack.train_predict(epochs=1)
        job = stack.api.wait_state(job_id, {"succeeded", "failed"}, timeout=120, workers=[])
        assert job["state"] == "succeeded", job
        assert job["worker"] == "local-1"
    finally:
        handle.stop()
    assert all(process.returncode == 0 for process in handle.processes)
    assert active_local_tokens(settings) == 0
