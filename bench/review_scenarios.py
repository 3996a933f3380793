"""The review benchmark's two scenarios: ``normal`` (PostgreSQL at human pace, then saturated)
and ``hostile`` (on each engine, a quiet run and one beside hostile neighbours), each on a
fresh, loaded database with servers of its own. See ``bench/review_load.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness.databases import sqlite_url, throwaway_postgres
from bench.harness.processes import ServerProcess
from bench.harness.reporting import load_average
from bench.review_clients import run_clients
from bench.review_neighbours import Neighbours
from bench.review_report import ENGINE_NAMES, compare, phase, print_hostile, run_figures
from bench.review_serverlog import server_log_summary
from bench.review_setup import (
    annotator_names,
    engineer_token,
    first_dataset,
    load_postgres,
    load_sqlite,
    sign_in,
    table_counts,
)

DATABASES = ("sqlite", "postgresql")
POSTGRES_PREFIX = "thresher_bench_review"
#: Account names the wrong sign-ins try: a real account no annotator uses, names that do not
#: exist, and "" for a new random name each time.
VICTIM = "victim"
LOGIN_TARGETS = (VICTIM, "admin", "root", "test", "")
#: Seconds between the engineer's calls to /api/me.
PROBE_PERIOD = 0.5


@dataclass(frozen=True)
class Sizes:
    samples: int
    tasks: int
    sqlite_samples: int
    sqlite_tasks: int
    human: float
    saturate: float
    clients: int
    hostile_seconds: float


FULL = Sizes(
    samples=1_000_000,
    tasks=200_000,
    sqlite_samples=100_000,
    # Two runs of 60 s at human pace take about 6,000 label and 29,000 junk tasks.
    sqlite_tasks=80_000,
    human=60.0,
    saturate=15.0,
    clients=24,
    hostile_seconds=60.0,
)
QUICK = Sizes(
    samples=20_000,
    tasks=10_000,
    sqlite_samples=5_000,
    sqlite_tasks=4_000,
    human=3.0,
    saturate=2.0,
    clients=4,
    hostile_seconds=3.0,
)


@contextmanager
def server(
    db_url: str, data_dir: Path, *, workers: int, log_path: Path | None = None
) -> Iterator[str]:
    """The server under test with ``workers`` processes, JSON logs in ``log_path`` (default
    ``data_dir/server.log``) and no access log; yields its base URL once it answers."""
    process = ServerProcess(
        db_url,
        data_dir,
        workers=workers,
        access_log=False,
        extra_env={"THRESHER_LOG_FORMAT": "json"},
        log_path=log_path or data_dir / "server.log",
    )
    with process:
        yield process.url


# --- normal: PostgreSQL at human pace, then saturated -------------------------------------------


def normal_scenario(args: argparse.Namespace, sizes: Sizes, data_dir: Path) -> dict[str, Any]:
    report: dict[str, Any] = {}
    data_dir.mkdir(parents=True)
    with throwaway_postgres(POSTGRES_PREFIX, migrate=False) as db_url:
        dbname = db_url.rsplit("/", 1)[1]
        print(f"loading {sizes.samples:,} samples and {sizes.tasks:,} tasks into {dbname} …")
        steps = load_postgres(db_url, samples=sizes.samples, tasks=sizes.tasks)
        report["load_seconds"] = {step: round(took, 1) for step, took in steps.items()}
        print("  " + ", ".join(f"{step} {took:.1f} s" for step, took in steps.items()))
        browsers = sign_in(db_url, annotator_names(max(args.annotators, sizes.clients)))
        dataset_id = first_dataset(db_url)
        report["database_before"] = table_counts(db_url)
        with server(db_url, data_dir, workers=args.workers) as url:
            print(f"server {url}, {args.workers} workers; clients in {args.client_procs} procs")
            human = run_clients(
                url,
                browsers[: args.annotators],
                dataset_id,
                "human",
                sizes.human,
                args.client_procs,
            )
            phase(
                report,
                "human_pace",
                f"human pace, {args.annotators} annotators: each 1 label decision/s "
                f"and 1 grid page of 48 per 10 s, {sizes.human:.0f} s",
                human.annotators,
                sizes.human,
            )
            for mode in ("single", "grid"):
                recorder = run_clients(
                    url,
                    browsers[: sizes.clients],
                    dataset_id,
                    mode,
                    sizes.saturate,
                    args.client_procs,
                ).annotators
                phase(
                    report,
                    f"saturation_{mode}",
                    f"saturation, {mode}: {sizes.clients} client loops flat out, "
                    f"{sizes.saturate:.0f} s",
                    recorder,
                    sizes.saturate,
                )
        report["database_after"] = table_counts(db_url)
    return report


# --- hostile neighbours: SQLite and PostgreSQL, quiet and hostile --------------------------------


@contextmanager
def loaded_database(
    engine: str, sizes: Sizes, data_dir: Path
) -> Iterator[tuple[str, dict[str, Any]]]:
    """A fresh database of ``engine`` with the dataset and the queue; yields its URL and what
    was loaded (sizes, seconds per step)."""
    if engine == "sqlite":
        samples, tasks = sizes.sqlite_samples, sizes.sqlite_tasks
        path = data_dir / "thresher.db"
        steps = load_sqlite(path, samples=samples, tasks=tasks)
        yield sqlite_url(path), _loaded(samples, tasks, steps)
        return
    with throwaway_postgres(POSTGRES_PREFIX, migrate=False) as url:
        steps = load_postgres(url, samples=sizes.samples, tasks=sizes.tasks)
        yield url, _loaded(sizes.samples, sizes.tasks, steps)


def _loaded(samples: int, tasks: int, steps: dict[str, float]) -> dict[str, Any]:
    seconds = {step: round(took, 1) for step, took in steps.items()}
    return {"samples": samples, "tasks": tasks, "load_seconds": seconds}


def hostile_on(
    engine: str, args: argparse.Namespace, sizes: Sizes, data_dir: Path
) -> dict[str, Any]:
    """The quiet and the hostile run on one engine, each ``sizes.hostile_seconds`` long."""
    data_dir.mkdir(parents=True)
    seconds = sizes.hostile_seconds
    workers = 1 if engine == "sqlite" else args.workers
    with loaded_database(engine, sizes, data_dir) as (db_url, loaded):
        print(
            f"\n{ENGINE_NAMES[engine]}: loaded {loaded['samples']:,} samples and "
            f"{loaded['tasks']:,} tasks ("
            + ", ".join(f"{step} {took:.1f} s" for step, took in loaded["load_seconds"].items())
            + ")",
            flush=True,
        )
        browsers = sign_in(db_url, annotator_names(args.annotators))
        # The victim is only ever tried with wrong passwords; the neighbour trickles its bodies.
        _, neighbour = sign_in(db_url, [VICTIM, "neighbour"])
        quiet_crowd = Neighbours(engineer_token=engineer_token(db_url), probe_period=PROBE_PERIOD)
        hostile_crowd = Neighbours(
            engineer_token=quiet_crowd.engineer_token,
            probe_period=quiet_crowd.probe_period,
            wrong_logins=args.wrong_logins,
            login_targets=LOGIN_TARGETS,
            login_rate=args.login_rate,
            login_addresses=args.login_addresses,
            tricklers=args.tricklers,
            trickler=neighbour,
        )
        dataset_id = first_dataset(db_url)
        runs: dict[str, Any] = {}
        logs: dict[str, Any] = {}
        for name, crowd in (("quiet", quiet_crowd), ("hostile", hostile_crowd)):
            # A server of its own for each run: requests a run left stuck do not hold up the next.
            log = data_dir / f"server-{name}.log"
            with server(db_url, data_dir, workers=workers, log_path=log) as url:
                print(f"  {name} run, {seconds:g} s …", flush=True)
                result = run_clients(
                    url, browsers, dataset_id, "human", seconds, args.client_procs, crowd
                )
            runs[name] = run_figures(result, seconds)
            logs[name] = server_log_summary(log)
        after = table_counts(db_url)
    section = {
        "database": {**loaded, "server_processes": workers, "after": after},
        **runs,
        **compare(runs["quiet"], runs["hostile"]),
        "server_log": logs,
    }
    print_hostile(engine, section, args)
    return section


def hostile_scenario(args: argparse.Namespace, sizes: Sizes, data_dir: Path) -> dict[str, Any]:
    load_before = load_average()
    report: dict[str, Any] = {
        "ran_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            "annotators": args.annotators,
            "seconds_per_run": sizes.hostile_seconds,
            "wrong_logins": args.wrong_logins,
            "login_rate": args.login_rate or "as fast as answered",
            "login_addresses": args.login_addresses or args.wrong_logins,
            "login_targets": list(LOGIN_TARGETS),
            "tricklers": args.tricklers,
            "engineer_probe_period_seconds": PROBE_PERIOD,
            "client_procs": args.client_procs,
        },
    }
    for engine in args.databases:
        report[engine] = hostile_on(engine, args, sizes, data_dir / engine)
    report["machine"] = {
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": load_average(),
    }
    return report
