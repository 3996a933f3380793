"""Review queue under load: a real server, PostgreSQL with 1,000,000 samples, HTTP annotators.

    .venv/bin/python bench/review_load.py [--samples 1000000] [--tasks 200000] [--human 60]

1. Builds a fresh PostgreSQL database (migrations, then COPY): one dataset with 5,000 classes
   and ``--samples`` samples; ``--tasks`` pending tasks, half label_check (with five model
   suggestions each), half junk_check.
2. Starts ``uvicorn app.main:create_app`` on 127.0.0.1 (``--workers`` processes) in a
   subprocess; annotators are signed in with browser sessions (cookie + CSRF header).
3. Human pace: 50 annotators, each making one label decision per second (lease 1, decide 1)
   and one grid page of 48 every 10 s (lease 48, decide 48 in one request), for ``--human``
   seconds: p50/p99 latency of each call, measured by the client.
4. Saturation: as many client loops as asked (``--clients``, spread over ``--client-procs``
   processes), each with its own annotator, as fast as they can for ``--saturate`` seconds:
   single-item (lease 10, then decide them one request each) and grid (lease 48, decide 48).

Prints a table and writes bench/results/review.json. Client and server share this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import multiprocessing
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.auth import service as auth_service  # noqa: E402
from app.db import create_db_engine, create_session_factory, transaction  # noqa: E402
from app.logging import configure_logging  # noqa: E402
from app.migrate import upgrade  # noqa: E402
from app.models import Role  # noqa: E402

PG_ADMIN_DSN = os.environ.get(
    "THRESHER_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
RESULTS = ROOT / "bench" / "results" / "review.json"
SECRET = "bench-secret-key-that-is-long-enough-0123456789"  # noqa: S105
CLASSES = 5_000
PASSWORD = "bench password 123"  # noqa: S105


# --- the database -------------------------------------------------------------------------------


def pg_url(dbname: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{dbname}"


def admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as connection:
        connection.execute(sql)  # type: ignore[arg-type]


@contextmanager
def fresh_database() -> Iterator[str]:
    name = f"thresher_bench_review_{uuid.uuid4().hex[:8]}"
    admin(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def copy_rows(
    connection: psycopg.Connection[Any], table: str, columns: str, lines: Iterator[str]
) -> None:
    with connection.cursor() as cursor, cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        buffer = io.StringIO()
        for count, line in enumerate(lines, start=1):
            buffer.write(line)
            if count % 50_000 == 0:
                copy.write(buffer.getvalue())
                buffer = io.StringIO()
        copy.write(buffer.getvalue())


def load(dbname: str, *, samples: int, tasks: int) -> dict[str, float]:
    """Migrates and fills the database; returns how long each step took (seconds)."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    upgrade(pg_url(dbname))
    timings["migrate"] = time.perf_counter() - started
    now = datetime.now(UTC).isoformat()
    rng = random.Random(7)
    dsn = PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{dbname}"
    with psycopg.connect(dsn) as connection:
        started = time.perf_counter()
        dataset_id = connection.execute(
            "INSERT INTO datasets (name, root, source, source_format, created_at) "
            "VALUES ('bench', '/data/bench', '/data/bench', 'imagefolder', now()) RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        copy_rows(
            connection,
            "classes",
            "dataset_id, name, sample_count",
            (f"{dataset_id}\tclass_{c:04d}\t{samples // CLASSES}\n" for c in range(CLASSES)),
        )
        first_class = connection.execute(
            "SELECT min(id) FROM classes WHERE dataset_id = %s", (dataset_id,)
        ).fetchone()[0]  # type: ignore[index]
        copy_rows(
            connection,
            "samples",
            "dataset_id, path, class_id, byte_size, sha256, width, height, mode, channels, "
            "image_format, missing, created_at, updated_at",
            (
                f"{dataset_id}\tc{i % CLASSES}/{i}.jpg\t{first_class + i % CLASSES}\t20000\t"
                f"{i:064x}\t320\t240\tRGB\t3\tJPEG\tf\t{now}\t{now}\n"
                for i in range(samples)
            ),
        )
        timings["copy samples"] = time.perf_counter() - started
        started = time.perf_counter()
        first_sample = connection.execute(
            "SELECT min(id) FROM samples WHERE dataset_id = %s", (dataset_id,)
        ).fetchone()[0]  # type: ignore[index]
        chosen = rng.sample(range(samples), tasks)

        def task_lines() -> Iterator[str]:
            for index, offset in enumerate(chosen):
                sample_id = first_sample + offset
                if index % 2 == 0:
                    picks = rng.sample(range(CLASSES), 5)
                    probabilities = sorted((rng.random() for _ in picks), reverse=True)
                    suggestions = json.dumps(
                        [
                            [first_class + c, round(p, 3)]
                            for c, p in zip(picks, probabilities, strict=True)
                        ]
                    )
                    kind, score = "label_check", probabilities[0]
                else:
                    suggestions, kind, score = "\\N", "junk_check", rng.random()
                yield (
                    f"{dataset_id}\t{kind}\t{sample_id}\t{score:.4f}\t{score:.4f}\tbench round\t"
                    f"flagged by the bench model\t{suggestions}\tpending\t0\t{now}\n"
                )

        copy_rows(
            connection,
            "review_tasks",
            "dataset_id, kind, sample_id, priority, score, source, reason, suggestions, state, "
            "lease_version, created_at",
            task_lines(),
        )
        connection.commit()
        timings["copy tasks"] = time.perf_counter() - started
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
    timings["vacuum analyze"] = time.perf_counter() - started
    return timings


@dataclass(frozen=True)
class Browser:
    """A signed-in annotator: the session cookie and the CSRF token."""

    username: str
    cookie: str
    csrf: str


def sign_in(dbname: str, count: int) -> list[Browser]:
    engine = create_db_engine(pg_url(dbname))
    try:
        factory = create_session_factory(engine)
        browsers = []
        with transaction(factory) as session:
            for index in range(count):
                user, _ = auth_service.create_user(
                    session,
                    username=f"annotator{index:03d}",
                    role=Role.ANNOTATOR,
                    password=PASSWORD,
                )
                cookie, csrf = auth_service.start_web_session(
                    session, user=user, lifetime=timedelta(hours=6)
                )
                browsers.append(Browser(username=user.username, cookie=cookie, csrf=csrf))
        return browsers
    finally:
        engine.dispose()


def dataset_and_classes(dbname: str) -> tuple[int, int]:
    dsn = PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{dbname}"
    with psycopg.connect(dsn) as connection:
        row = connection.execute(
            "SELECT dataset_id, min(id) FROM classes GROUP BY dataset_id"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def table_counts(dbname: str) -> dict[str, int]:
    dsn = PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{dbname}"
    with psycopg.connect(dsn) as connection:
        return {
            "samples": connection.execute("SELECT count(*) FROM samples").fetchone()[0],  # type: ignore[index]
            "pending tasks": connection.execute(
                "SELECT count(*) FROM review_tasks WHERE state = 'pending'"
            ).fetchone()[0],  # type: ignore[index]
            "decisions": connection.execute("SELECT count(*) FROM review_decisions").fetchone()[0],  # type: ignore[index]
        }


# --- the server ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def server(dbname: str, *, workers: int, data_dir: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "THRESHER_DATABASE_URL": pg_url(dbname),
        "THRESHER_DATA_DIR": str(data_dir),
        "THRESHER_SECRET_KEY": SECRET,
        "THRESHER_LOG_FORMAT": "json",
    }
    log = (data_dir / "server.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start; see {data_dir / 'server.log'}")
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


# --- the annotators -----------------------------------------------------------------------------


@dataclass
class Recorder:
    latencies: dict[str, list[float]] = field(default_factory=dict)  # ms
    decisions: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.latencies.setdefault(name, []).append(seconds * 1000)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def merge(self, other: Recorder) -> None:
        for name, values in other.latencies.items():
            self.latencies.setdefault(name, []).extend(values)
        self.decisions += other.decisions
        for name, count in other.errors.items():
            self.errors[name] = self.errors.get(name, 0) + count


def client_for(url: str, browser: Browser) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url,
        cookies={"thresher_session": browser.cookie},
        headers={"X-CSRF-Token": browser.csrf},
        timeout=30,
        limits=httpx.Limits(max_connections=2, max_keepalive_connections=2),
    )


class Annotator:
    def __init__(self, client: httpx.AsyncClient, recorder: Recorder, dataset_id: int, seed: int):
        self.client = client
        self.recorder = recorder
        self.dataset_id = dataset_id
        self.rng = random.Random(seed)

    async def call(self, name: str, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        started = time.perf_counter()
        try:
            response = await self.client.post(path, json=body)
        except httpx.HTTPError as exc:
            self.recorder.error(f"{name}: {type(exc).__name__}")
            return None
        self.recorder.add(name, time.perf_counter() - started)
        if response.status_code != 200:
            self.recorder.error(f"{name}: HTTP {response.status_code}")
            return None
        return response.json()  # type: ignore[no-any-return]

    async def lease(self, name: str, kind: str, n: int) -> list[dict[str, Any]]:
        body = {"kind": kind, "dataset_id": self.dataset_id, "n": n}
        found = await self.call(name, "/api/review/leases", body)
        return found["tasks"] if found else []

    def label_decision(self, task: dict[str, Any]) -> dict[str, Any]:
        roll = self.rng.random()
        decision: dict[str, Any] = {
            "task_id": task["id"],
            "lease_version": task["lease_version"],
            "idempotency_key": uuid.uuid4().hex,
            "seconds": round(self.rng.uniform(0.5, 3), 3),
        }
        suggested = [
            s["class_id"] for s in task["suggestions"] if s["class_id"] != task["given_class_id"]
        ]
        if roll < 0.6:
            decision["verdict"] = "accept"
        elif roll < 0.8 and suggested:
            decision["verdict"] = "relabel"
            decision["class_id"] = suggested[0]
        elif roll < 0.9:
            decision["verdict"] = "junk"
        else:
            decision["verdict"] = "unsure"
        return decision

    def grid_decisions(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        page = uuid.uuid4().hex[:16]
        return [
            {
                "task_id": task["id"],
                "lease_version": task["lease_version"],
                "verdict": "junk" if self.rng.random() < 0.1 else "not_junk",
                "idempotency_key": f"{page}-{task['id']}",
                "seconds": 0.2,
            }
            for task in tasks
        ]

    async def decide(self, name: str, decisions: list[dict[str, Any]]) -> None:
        if await self.call(name, "/api/review/decisions", {"decisions": decisions}):
            self.recorder.decisions += len(decisions)

    async def label_at_pace(self, until: float, period: float) -> None:
        await asyncio.sleep(self.rng.uniform(0, period))
        while time.monotonic() < until:
            tick = time.monotonic()
            tasks = await self.lease("lease 1 (label)", "label_check", 1)
            if not tasks:
                return
            await asyncio.sleep(max(0.0, tick + period * 0.8 - time.monotonic()))
            await self.decide("decide 1 (label)", [self.label_decision(tasks[0])])
            await asyncio.sleep(max(0.0, tick + period - time.monotonic()))

    async def grid_at_pace(self, until: float, period: float) -> None:
        await asyncio.sleep(self.rng.uniform(0, period))
        while time.monotonic() < until:
            tick = time.monotonic()
            tasks = await self.lease("lease 48 (grid)", "junk_check", 48)
            if not tasks:
                return
            await asyncio.sleep(max(0.0, tick + period * 0.9 - time.monotonic()))
            await self.decide("decide 48 (grid)", self.grid_decisions(tasks))
            await asyncio.sleep(max(0.0, tick + period - time.monotonic()))

    async def singles_flat_out(self, until: float) -> None:
        while time.monotonic() < until:
            tasks = await self.lease("lease 10", "label_check", 10)
            if not tasks:
                return
            for task in tasks:
                await self.decide("decide 1", [self.label_decision(task)])

    async def grids_flat_out(self, until: float) -> None:
        while time.monotonic() < until:
            tasks = await self.lease("lease 48", "junk_check", 48)
            if not tasks:
                return
            await self.decide("decide 48", self.grid_decisions(tasks))


def _client_process(
    url: str, browsers: list[Browser], dataset_id: int, mode: str, start_at: float, seconds: float
) -> Recorder:
    async def run() -> Recorder:
        recorder = Recorder()
        clients = [client_for(url, browser) for browser in browsers]
        try:
            await asyncio.sleep(max(0.0, start_at - time.time()))
            until = time.monotonic() + seconds
            annotators = [
                Annotator(client, recorder, dataset_id, seed=index)
                for index, client in enumerate(clients)
            ]
            if mode == "human":
                jobs = [a.label_at_pace(until, 1.0) for a in annotators]
                jobs += [a.grid_at_pace(until, 10.0) for a in annotators]
            elif mode == "single":
                jobs = [a.singles_flat_out(until) for a in annotators]
            else:
                jobs = [a.grids_flat_out(until) for a in annotators]
            await asyncio.gather(*jobs)
        finally:
            for client in clients:
                await client.aclose()
        return recorder

    return asyncio.run(run())


def run_clients(
    url: str, browsers: list[Browser], dataset_id: int, mode: str, seconds: float, processes: int
) -> Recorder:
    """Runs one annotator loop per browser (``mode``: human, single or grid), spread over
    ``processes`` client processes, for ``seconds``; returns what they measured."""
    groups = [browsers[i::processes] for i in range(processes)]
    start_at = time.time() + 2.0
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        results = [
            pool.apply_async(_client_process, (url, group, dataset_id, mode, start_at, seconds))
            for group in groups
        ]
        merged = Recorder()
        for result in results:
            merged.merge(result.get(timeout=seconds + 120))
    return merged


# --- reporting ----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summarise(recorder: Recorder) -> dict[str, dict[str, float]]:
    return {
        name: {
            "calls": len(values),
            "p50_ms": round(statistics.median(values), 2),
            "p99_ms": round(percentile(values, 99), 2),
            "max_ms": round(max(values), 2),
        }
        for name, values in sorted(recorder.latencies.items())
    }


def print_table(title: str, rows: dict[str, dict[str, float]], extra: str = "") -> None:
    print(f"\n{title}{extra}")
    print(f"  {'call':22} {'calls':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, row in rows.items():
        print(
            f"  {name:22} {row['calls']:>8,.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
            f"{row['max_ms']:>8.1f}"
        )


def phase(
    report: dict[str, Any], name: str, title: str, recorder: Recorder, seconds: float
) -> None:
    rate = recorder.decisions / seconds
    report[name] = {
        "seconds": seconds,
        "decisions": recorder.decisions,
        "decisions_per_second": round(rate, 1),
        "errors": recorder.errors,
        "latency": summarise(recorder),
    }
    errors = recorder.errors or "none"
    print_table(title, report[name]["latency"], f"  → {rate:,.0f} decisions/s, errors: {errors}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--human", type=float, default=60.0, help="seconds at human pace")
    parser.add_argument("--saturate", type=float, default=15.0, help="seconds per saturation run")
    parser.add_argument("--clients", type=int, default=24, help="flat-out client loops")
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    args = parser.parse_args()
    configure_logging("console", logging.WARNING)

    load_before = os.getloadavg()
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_before": [round(x, 2) for x in load_before]},
        "settings": vars(args),
    }
    data_dir = Path(tempfile.mkdtemp(prefix="thresher-bench-review-"))
    try:
        with fresh_database() as dbname:
            print(f"loading {args.samples:,} samples and {args.tasks:,} tasks into {dbname} …")
            steps = load(dbname, samples=args.samples, tasks=args.tasks)
            report["load_seconds"] = {step: round(took, 1) for step, took in steps.items()}
            print("  " + ", ".join(f"{step} {took:.1f} s" for step, took in steps.items()))
            browsers = sign_in(dbname, max(args.annotators, args.clients))
            dataset_id, _ = dataset_and_classes(dbname)
            report["database_before"] = table_counts(dbname)
            with server(dbname, workers=args.workers, data_dir=data_dir) as url:
                print(f"server {url}, {args.workers} workers; clients in {args.client_procs} procs")
                human = run_clients(
                    url,
                    browsers[: args.annotators],
                    dataset_id,
                    "human",
                    args.human,
                    args.client_procs,
                )
                phase(
                    report,
                    "human_pace",
                    f"human pace, {args.annotators} annotators: each 1 label decision/s "
                    f"and 1 grid page of 48 per 10 s, {args.human:.0f} s",
                    human,
                    args.human,
                )
                for mode in ("single", "grid"):
                    recorder = run_clients(
                        url,
                        browsers[: args.clients],
                        dataset_id,
                        mode,
                        args.saturate,
                        args.client_procs,
                    )
                    phase(
                        report,
                        f"saturation_{mode}",
                        f"saturation, {mode}: {args.clients} client loops flat out, "
                        f"{args.saturate:.0f} s",
                        recorder,
                        args.saturate,
                    )
            report["database_after"] = table_counts(dbname)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    load_after = os.getloadavg()
    report["machine"]["load_after"] = [round(x, 2) for x in load_after]
    print(
        f"\nload average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}, "
        f"on {os.cpu_count()} cores shared with other work"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
