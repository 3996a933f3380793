"""Commands create or upgrade the embedded SQLite schema themselves; on PostgreSQL they leave
the schema alone and name the command that migrates it. Run through the installed
``thresher`` entry point, in fresh processes, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from PIL import Image

from bench.harness.databases import libpq_dsn, postgres_reachable, throwaway_postgres
from tests.conftest import PG_ADMIN_DSN, TEST_SECRET

THRESHER = Path(sys.executable).with_name("thresher")
ROOT = Path(__file__).resolve().parents[2]


def thresher(
    *args: str, data_dir: Path, database_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("THRESHER_") or key == "THRESHER_LOG_FORMAT"
    }
    env |= {
        "THRESHER_DATA_DIR": str(data_dir),
        "THRESHER_SECRET_KEY": TEST_SECRET,
        "THRESHER_IMPORT_PROCESSES": "1",
    }
    if database_url is not None:
        env["THRESHER_DATABASE_URL"] = database_url
    return subprocess.run(
        [str(THRESHER), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_users_create_on_a_fresh_sqlite_data_dir_creates_the_schema(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    created = thresher("users", "create", "ada", "--role", "engineer", data_dir=data_dir)

    assert created.returncode == 0, created.stderr
    assert "created engineer ada" in created.stdout
    listed = thresher("users", "list", data_dir=data_dir)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["ada", "engineer"]


def test_import_on_a_fresh_sqlite_data_dir_creates_the_schema(tmp_path: Path) -> None:
    images = tmp_path / "images"
    (images / "cat").mkdir(parents=True)
    Image.new("RGB", (32, 24), "orange").save(images / "cat/0.jpg")

    result = thresher("import", "pets", str(images), data_dir=tmp_path / "data")

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "thresher.db").is_file()


@pytest.fixture
def empty_postgres() -> Iterator[str]:
    """A new PostgreSQL database with no schema at all."""
    if not postgres_reachable(PG_ADMIN_DSN):
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN_DSN}")
    with throwaway_postgres("thresher_empty", migrate=False, admin_dsn=PG_ADMIN_DSN) as url:
        yield url


@pytest.mark.postgres
def test_on_a_fresh_postgres_database_commands_name_the_upgrade_and_change_nothing(
    empty_postgres: str, tmp_path: Path
) -> None:
    result = thresher(
        "users", "create", "ada", data_dir=tmp_path / "data", database_url=empty_postgres
    )

    assert result.returncode == 1
    assert "run `thresher db upgrade`" in result.stderr
    with psycopg.connect(libpq_dsn(empty_postgres)) as connection:
        tables = connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert tables == (0,)
