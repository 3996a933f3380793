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
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.logging import configure_logging
from bench.harness.reporting import RESULTS, load_average, write_results
from bench.review_scenarios import (
    DATABASES,
    FULL,
    QUICK,
    Sizes,
    hostile_scenario,
    normal_scenario,
)

# --- the command --------------------------------------------------------------------------------


def _size_options(parser: argparse.ArgumentParser) -> None:
    """The options that override a field of :class:`Sizes` (default: FULL, or QUICK)."""
    for name, what, kind, spec in (
        ("samples", "PostgreSQL samples", int, ","),
        ("tasks", "PostgreSQL tasks", int, ","),
        ("sqlite-samples", "SQLite samples (hostile scenario)", int, ","),
        ("sqlite-tasks", "SQLite tasks (hostile scenario)", int, ","),
        ("clients", "flat-out client loops", int, ","),
        ("human", "seconds at human pace", float, "g"),
        ("saturate", "seconds per saturation run", float, "g"),
        ("hostile-seconds", "seconds of each of the quiet and the hostile run", float, "g"),
    ):
        key = name.replace("-", "_")
        full, quick = format(getattr(FULL, key), spec), format(getattr(QUICK, key), spec)
        parser.add_argument(
            f"--{name}", type=kind, help=f"{what} (default {full}; --quick {quick})"
        )


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
    _size_options(parser)
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
