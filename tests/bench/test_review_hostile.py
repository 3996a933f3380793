"""The review benchmark's hostile-neighbours scenario, as a smoke run on SQLite
(bench/review_load.py --scenario hostile --quick): a real server, annotators, the engineer's
/api/me probe, wrong sign-ins and trickled bodies, and the report they make.

The crowd is kept small (10 annotators, 4 wrong-sign-in clients), so that it never has more
requests in flight than the server has threads: the figures are the benchmark's business, not
this test's; here the annotators must simply get through without an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.scripts import run_bench

pytestmark = pytest.mark.slow


def test_the_hostile_scenario_reports_both_runs_on_sqlite(tmp_path: Path) -> None:
    report, stdout = run_bench(
        "review_load.py",
        "--scenario",
        "hostile",
        "--quick",
        "--databases",
        "sqlite",
        "--annotators",
        "10",
        "--wrong-logins",
        "4",
        out=tmp_path / "review.json",
        timeout=300,
    )

    assert set(report) == {"hostile_neighbours"}, "a scenario writes only its own section"
    section = report["hostile_neighbours"]
    assert "postgresql" not in section
    sqlite = section["sqlite"]
    assert sqlite["database"]["server_processes"] == 1
    for run in ("quiet", "hostile"):
        figures = sqlite[run]
        assert figures["errors"] == {}, f"{run}: {figures['errors']}"
        assert figures["decisions"] > 0
        assert {"lease 1 (label)", "decide 1 (label)"} <= set(figures["latency"])
        assert figures["engineer"]["errors"] == {}
        assert figures["engineer"]["latency"]["GET /api/me (engineer)"]["calls"] > 0
        assert sqlite["server_log"][run]["trouble"] == []
    assert sqlite["quiet"]["neighbours"] == {}
    answers = sqlite["hostile"]["neighbours"]
    sign_ins = {name for name in answers if name.startswith("wrong sign-in")}
    assert sign_ins and sign_ins <= {"wrong sign-in → 401", "wrong sign-in → 429"}
    assert sum(1 for name in answers if name.startswith("trickle")) >= 1
    assert set(sqlite["p99_ratio"]) >= {"lease 1 (label)", "decide 1 (label)"}
    assert sqlite["goals"]["no_annotator_errors"] is True
    assert "hostile neighbours, SQLite" in stdout
