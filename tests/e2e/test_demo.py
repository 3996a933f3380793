"""``thresher demo`` as a user runs it: one process that builds the demo dataset, creates the
admin and the cleaning loop in auto mode, and serves with one local CPU worker. Review work must
be waiting at once (the junk seed), and once the seed is reviewed the loop trains the junk
classifier on the worker and queues what it flags: review work made by a model.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.pipeline.simulate import Simulator
from app.pipeline.truth import load_truth
from bench.harness.processes import free_port, wait_for

pytestmark = pytest.mark.slow

THRESHER = Path(sys.executable).with_name("thresher")


@dataclass
class Demo:
    process: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [str(THRESHER), *args],
            cwd=self.data_dir.parent,
            env=_env(self.data_dir),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THRESHER_")}
    return {**env, "THRESHER_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "2"}


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    port = free_port()
    data_dir = tmp_path / "thresher-data"
    log_path = tmp_path / "demo.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(THRESHER), "demo", "--port", str(port)],
            cwd=tmp_path,
            env=_env(data_dir),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    running = Demo(process, f"http://127.0.0.1:{port}", data_dir, log_path)
    try:
        wait_for(
            lambda: "Thresher is serving" in running.log() or process.poll() is not None,
            timeout=240,
            what="the demo to serve",
        )
        assert process.poll() is None, running.log()
        yield running
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _status(http: httpx.Client) -> dict[str, Any]:
    response = http.get("/api/pipelines/1")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_make_demo_leaves_review_work_and_the_loop_runs_on(demo: Demo) -> None:
    output = demo.log()
    password = re.search(r"user admin, password (\S+)", output)
    assert password, output
    assert "cleaning loop created for 'demo-digits', in auto mode" in output
    assert f"{demo.url}/datasets/1/cleaning" in output
    token = demo.cli("tokens", "create", "--user", "admin", "--name", "test").splitlines()[-1]
    http = httpx.Client(base_url=demo.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    # The junk seed is waiting for people as soon as the server runs.
    def seed_open() -> dict[str, Any] | None:
        status = _status(http)
        rounds = status["rounds"]
        return status if rounds and rounds[0]["state"] == "reviewing" else None

    status = wait_for(seed_open, timeout=60, what="the junk seed")
    seed = status["rounds"][0]
    assert seed["kind"] == "junk_seed" and seed["tasks"]["pending"] >= 200

    # The person signs in with the printed password and sees the queue.
    browser = httpx.Client(base_url=demo.url, timeout=60)
    form = browser.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert csrf, form.text
    signed_in = browser.post(
        "/login",
        data={"username": "admin", "password": password.group(1), "csrf_token": csrf.group(1)},
    )
    assert signed_in.status_code in (200, 303), signed_in.text
    assert "junk" in browser.get("/review").text.lower()

    # Simulated annotators review the seed; the worker trains the junk classifier and the loop
    # queues its flags, then audits what is left and moves to the label stage.
    truth = load_truth(
        demo.data_dir / "demo" / "truth.csv", column="clean_label", junk_column="junk"
    )
    simulator = Simulator(
        client_factory=lambda: httpx.Client(base_url=demo.url, timeout=60),
        token=token,
        dataset="demo-digits",
        truth=truth,
    )
    try:
        deadline = time.monotonic() + 420
        while _status(http)["stage"] == "junk":
            assert time.monotonic() < deadline, f"{_status(http)}\n{demo.log()[-3000:]}"
            if not simulator.work_once():
                time.sleep(1)
    finally:
        simulator.close()
    every = _status(http)["rounds"]
    rounds = {r["kind"]: r for r in every}
    iterations = [r["stats"] for r in every if r["kind"] == "junk_iteration"]
    first = iterations[0]
    assert first["flagged"] > 0 and first["junk"] >= 0.8 * first["decided"], iterations
    found = rounds["junk_seed"]["stats"]["junk"] + sum(i.get("junk", 0) for i in iterations)
    assert found >= 50, rounds  # of the demo's 60 junk photos
    assert rounds["junk_audit"]["stats"]["meets_target"], rounds["junk_audit"]
    assert "cross_validation" in rounds  # auto mode went on by itself
    http.close()
    browser.close()

    # SIGTERM (a service manager's stop) ends the server and its local worker with it.
    demo.process.send_signal(signal.SIGTERM)
    assert demo.process.wait(timeout=90) == 128 + signal.SIGTERM
    assert "jobs.local_workers.stopped" in demo.log()
