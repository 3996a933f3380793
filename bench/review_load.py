"""Review queue under load: a real server, HTTP annotators, and hostile neighbours.

    .venv/bin/python bench/review_load.py [--scenario all|normal|hostile] [--quick] [...]

**normal** (PostgreSQL):

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

**hostile** (hostile neighbours), on each of ``--databases``: SQLite (``--sqlite-samples``,
``--sqlite-tasks``, bulk-inserted; one server process) and PostgreSQL (as above; ``--workers``
processes). Two runs of ``--hostile-seconds`` each against the same server, the 50 annotators
at human pace in both, and an engineer calling ``GET /api/me`` with an API token twice a
second:

- quiet: nobody else;
- hostile: also 16 clients sending wrong passwords to the sign-in form (each from its own
  address; a real account nobody else uses, a few names that do not exist, and new random
  names), and 4 clients trickling request bodies a byte at a time (see
  :func:`bench.review_clients.trickler_plan`).

Printed side by side: each call's p50/p99 in both runs and the ratio of the p99s, the
annotators' errors, the engineer's ``/api/me``; then what the neighbours got (401: password
checked, 429: throttled before checking, 408: body too slow) and the server log's error lines.
The goals: p99 within 2× of quiet, no annotator errors, ``/api/me`` p99 under 50 ms.

``--quick`` shrinks everything to a smoke run of seconds. Writes bench/results/review.json
(review-quick.json with ``--quick``; ``--out`` elsewhere), replacing only the sections this run
measured. Clients and server share this machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.logging import configure_logging  # noqa: E402
from bench.harness.databases import sqlite_url, throwaway_postgres  # noqa: E402
from bench.harness.processes import ServerProcess  # noqa: E402
from bench.harness.reporting import RESULTS, load_average, write_results  # noqa: E402
from bench.review_clients import Neighbours, Recorder, RunResult, run_clients  # noqa: E402
from bench.review_setup import (  # noqa: E402
    annotator_names,
    engineer_token,
    first_dataset,
    load_postgres,
    load_sqlite,
    server_log_summary,
    sign_in,
    table_counts,
)

DATABASES = ("sqlite", "postgresql")
POSTGRES_PREFIX = "thresher_bench_review"
ENGINE_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
#: Account names the wrong sign-ins try: a real account no annotator uses, names that do not
#: exist, and "" for a new random name each time.
VICTIM = "victim"
LOGIN_TARGETS = (VICTIM, "admin", "root", "test", "")
#: Seconds between the engineer's calls to /api/me.
PROBE_PERIOD = 0.5
#: The goals the hostile run is held to (printed, not enforced).
MAX_P99_RATIO = 2.0
MAX_ME_P99_MS = 50.0


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


def run_figures(result: RunResult, seconds: float) -> dict[str, Any]:
    return {
        "seconds": seconds,
        "decisions": result.annotators.decisions,
        "decisions_per_second": round(result.annotators.decisions / seconds, 1),
        "errors": result.annotators.errors,
        "latency": summarise(result.annotators),
        "engineer": {"latency": summarise(result.engineer), "errors": result.engineer.errors},
        "neighbours": summarise(result.neighbours),
    }


def compare(quiet: dict[str, Any], hostile: dict[str, Any]) -> dict[str, Any]:
    """The ratio of the p99s per call, and whether the goals were met."""
    ratios = {
        name: round(row["p99_ms"] / quiet["latency"][name]["p99_ms"], 2)
        for name, row in hostile["latency"].items()
        if name in quiet["latency"]
    }
    me = hostile["engineer"]["latency"].get("GET /api/me (engineer)")
    return {
        "p99_ratio": ratios,
        "goals": {
            # A call that never succeeded in the hostile run misses the goal too.
            f"p99_within_{MAX_P99_RATIO:g}x_of_quiet": bool(ratios)
            and set(ratios) == set(quiet["latency"])
            and max(ratios.values()) <= MAX_P99_RATIO,
            "no_annotator_errors": not quiet["errors"] and not hostile["errors"],
            f"me_p99_under_{MAX_ME_P99_MS:g}_ms": me is not None
            and not hostile["engineer"]["errors"]
            and me["p99_ms"] < MAX_ME_P99_MS,
        },
    }


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


def print_hostile(engine: str, section: dict[str, Any], args: argparse.Namespace) -> None:
    quiet, hostile = section["quiet"], section["hostile"]
    database = section["database"]
    print(
        f"\nhostile neighbours, {ENGINE_NAMES[engine]} ({database['samples']:,} samples, "
        f"server processes: {database['server_processes']}): {args.annotators} annotators at "
        f"human pace, {quiet['seconds']:g} s quiet, then {hostile['seconds']:g} s beside "
        f"{args.wrong_logins} wrong-sign-in clients and {args.tricklers} tricklers"
    )
    print(
        f"  {'call':24} {'calls':>6} {'p50 ms':>7} {'p99 ms':>7} │ {'calls':>6} {'p50 ms':>7} "
        f"{'p99 ms':>7} │ {'p99 ×':>5}"
    )
    print(f"  {'':24} {'quiet':^22} │ {'hostile':^22} │")
    calls = sorted({*quiet["latency"], *hostile["latency"]})
    rows = [(name, quiet["latency"].get(name), hostile["latency"].get(name)) for name in calls]
    me = "GET /api/me (engineer)"
    rows.append((me, quiet["engineer"]["latency"].get(me), hostile["engineer"]["latency"].get(me)))
    for name, before, during in rows:
        cells = []
        for row in (before, during):
            cells.append(
                f"{row['calls']:>6,} {row['p50_ms']:>7.1f} {row['p99_ms']:>7.1f}"
                if row
                else f"{'–':>22}"
            )
        ratio = (
            f"{during['p99_ms'] / before['p99_ms']:>5.2f}"
            if before and during and before["p99_ms"]
            else f"{'–':>5}"
        )
        print(f"  {name:24} {cells[0]} │ {cells[1]} │ {ratio}")
    print(
        f"  {'decisions/s':24} {quiet['decisions_per_second']:>22,.0f} │ "
        f"{hostile['decisions_per_second']:>22,.0f} │"
    )
    for who, key in (("annotators", None), ("engineer", "engineer")):
        errs = [(run[key] if key else run)["errors"] or "none" for run in (quiet, hostile)]
        print(f"  errors, {who}: quiet {errs[0]}; hostile {errs[1]}")
    goals = "; ".join(f"{goal}: {'yes' if met else 'NO'}" for goal, met in section["goals"].items())
    print(f"  goals: {goals}")
    print("  what the neighbours got (ms: time to the answer; a trickle: the connection's life)")
    for name, row in hostile["neighbours"].items():
        print(
            f"    {name:58} {row['calls']:>7,} × p50 {row['p50_ms']:>9.1f}"
            f"  max {row['max_ms']:>9.1f}"
        )
    for run in ("quiet", "hostile"):
        summary = section["server_log"][run]
        levels = ", ".join(f"{lvl} {n:,}" for lvl, n in sorted(summary["entries_by_level"].items()))
        print(f"  server log, {run} run: {levels or 'empty'}")
        for trouble in summary["trouble"]:
            print(f"    {trouble['count']:>6,} × {trouble['line']}")


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


# --- the command --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Sizes]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=("all", "normal", "hostile"), default="all")
    parser.add_argument("--quick", action="store_true", help="a smoke run of seconds")
    parser.add_argument(
        "--databases",
        type=lambda text: text.split(","),
        default=list(DATABASES),
        help="engines of the hostile scenario, comma-separated (sqlite,postgresql)",
    )
    for name, what in (
        ("samples", "PostgreSQL samples"),
        ("tasks", "PostgreSQL tasks"),
        ("sqlite-samples", "SQLite samples (hostile scenario)"),
        ("sqlite-tasks", "SQLite tasks (hostile scenario)"),
        ("clients", "flat-out client loops"),
    ):
        key = name.replace("-", "_")
        parser.add_argument(
            f"--{name}",
            type=int,
            help=f"{what} (default {getattr(FULL, key):,}; --quick {getattr(QUICK, key):,})",
        )
    for name, what in (
        ("human", "seconds at human pace"),
        ("saturate", "seconds per saturation run"),
        ("hostile-seconds", "seconds of each of the quiet and the hostile run"),
    ):
        key = name.replace("-", "_")
        parser.add_argument(
            f"--{name}",
            type=float,
            help=f"{what} (default {getattr(FULL, key):g}; --quick {getattr(QUICK, key):g})",
        )
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="PostgreSQL server processes")
    parser.add_argument("--wrong-logins", type=int, default=16, help="wrong-sign-in clients")
    parser.add_argument(
        "--login-rate",
        type=float,
        default=0.0,
        help="sign-ins per second per wrong-sign-in client (0: as fast as answered)",
    )
    parser.add_argument(
        "--login-addresses",
        type=int,
        default=0,
        help="client addresses the wrong sign-ins come from (0: one per client)",
    )
    parser.add_argument("--tricklers", type=int, default=4, help="body-trickling clients")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, DBs)")
    parser.add_argument("--out", type=Path, help="results file (default bench/results/review.json)")
    args = parser.parse_args(argv)
    unknown = set(args.databases) - set(DATABASES)
    if unknown:
        parser.error(f"unknown databases {sorted(unknown)}; choose from {', '.join(DATABASES)}")
    base = QUICK if args.quick else FULL
    given = {
        key: value
        for key, value in vars(args).items()
        if key in Sizes.__dataclass_fields__ and value is not None
    }
    sizes = Sizes(**{**asdict(base), **given})
    if sizes.tasks > sizes.samples or sizes.sqlite_tasks > sizes.sqlite_samples:
        parser.error("each task is about its own sample: --tasks may not exceed --samples")
    return args, sizes


def main(argv: list[str] | None = None) -> int:
    args, sizes = parse_args(argv)
    configure_logging("console", logging.WARNING)
    name = "review-quick" if args.quick else "review"
    out = args.out or RESULTS / f"{name}.json"
    # Sections this run does not measure are kept as the last run left them.
    report: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    started = time.perf_counter()
    data_dir = Path(tempfile.mkdtemp(prefix="thresher-bench-review-"))
    try:
        if args.scenario in ("all", "normal"):
            load_before = load_average()
            report["machine"] = {
                "cpus": os.cpu_count(),
                "load_before": load_before,
            }
            report["settings"] = {
                **{k: v for k, v in vars(args).items() if k not in asdict(sizes)},
                **asdict(sizes),
                "out": str(out),
            }
            report.update(normal_scenario(args, sizes, data_dir / "normal"))
            report["machine"]["load_after"] = load_average()
        if args.scenario in ("all", "hostile"):
            report["hostile_neighbours"] = hostile_scenario(args, sizes, data_dir / "hostile")
    finally:
        if args.keep:
            print(f"work folder kept: {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    load = os.getloadavg()
    print(
        f"\n{time.perf_counter() - started:.0f} s in all; load average (1 min) now {load[0]:.2f} "
        f"on {os.cpu_count()} cores shared with other work"
    )
    print(f"wrote {write_results(name, report, out=out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
