"""What the review benchmark prints and keeps: latency percentiles per call, the figures of a
run, the quiet run against the hostile one (the p99 ratios and the goals), and their tables.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.review_annotators import Recorder
from bench.review_clients import RunResult

ENGINE_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
#: The goals the hostile run is held to (printed, not enforced).
MAX_P99_RATIO = 2.0
MAX_ME_P99_MS = 50.0


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
