"""Throwaway databases of the benchmarks and the real-process tests: migrated when asked, and
gone afterwards."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, inspect

from bench.harness.databases import (
    PG_ADMIN_DSN,
    migrated_database,
    postgres_reachable,
    throwaway_postgres,
)


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_a_sqlite_database_is_migrated_in_its_folder(tmp_path: Path) -> None:
    with migrated_database("sqlite", tmp_path) as url:
        assert url == f"sqlite:///{tmp_path / 'thresher.db'}"
        assert {"datasets", "samples", "review_tasks"} <= _tables(url)


def test_an_unknown_engine_is_refused_with_the_choices(tmp_path: Path) -> None:
    with (
        pytest.raises(ValueError, match="sqlite, postgresql"),
        migrated_database("mysql", tmp_path),
    ):
        pass


@pytest.mark.postgres
def test_a_throwaway_postgres_database_is_dropped_afterwards() -> None:
    if not postgres_reachable():
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN_DSN}")
    with throwaway_postgres("thresher_bench_test", migrate=False) as url:
        name = url.rsplit("/", 1)[1]
        assert name.startswith("thresher_bench_test_")
        assert _tables(url) == set()
    with psycopg.connect(PG_ADMIN_DSN) as admin:
        found = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    assert found is None
