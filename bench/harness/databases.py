"""Databases for a run: a SQLite file, or a throwaway PostgreSQL database created on the server
at ``THRESHER_BENCH_PG_DSN`` (default: the local one the tests use; the tests pass their own)
and dropped afterwards, each migrated to the head revision unless asked otherwise.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from app.migrate import upgrade

#: The PostgreSQL server's maintenance database, which creates and drops the throwaway ones.
PG_ADMIN_DSN = os.environ.get(
    "THRESHER_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
ENGINES = ("sqlite", "postgresql")


def postgres_reachable(admin_dsn: str = PG_ADMIN_DSN) -> bool:
    try:
        with psycopg.connect(admin_dsn, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def postgres_url(dbname: str, admin_dsn: str = PG_ADMIN_DSN) -> str:
    """The SQLAlchemy URL of the database ``dbname`` on the server of ``admin_dsn``."""
    base = admin_dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{dbname}"


def libpq_dsn(url: str) -> str:
    """What psycopg connects to for a SQLAlchemy URL of :func:`postgres_url`."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def postgres_admin(sql: str, admin_dsn: str = PG_ADMIN_DSN) -> None:
    """Runs ``sql`` (CREATE or DROP DATABASE) on the maintenance database, outside a
    transaction."""
    with psycopg.connect(admin_dsn, autocommit=True) as connection:
        connection.execute(sql)  # type: ignore[arg-type]


@contextmanager
def throwaway_postgres(
    prefix: str = "thresher_bench", *, migrate: bool = True, admin_dsn: str = PG_ADMIN_DSN
) -> Iterator[str]:
    """A new database named ``<prefix>_<random>`` on the server of ``admin_dsn``, migrated
    when ``migrate``, dropped afterwards (connections and all); yields its SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    postgres_admin(f'CREATE DATABASE "{name}"', admin_dsn)
    try:
        url = postgres_url(name, admin_dsn)
        if migrate:
            upgrade(url)
        yield url
    finally:
        postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', admin_dsn)


@contextmanager
def migrated_database(engine: str, folder: Path) -> Iterator[str]:
    """A fresh, migrated database of ``engine`` (``sqlite``: ``<folder>/thresher.db``;
    ``postgresql``: :func:`throwaway_postgres`); yields its SQLAlchemy URL."""
    if engine == "sqlite":
        url = sqlite_url(folder / "thresher.db")
        upgrade(url)
        yield url
        return
    if engine != "postgresql":
        raise ValueError(f"unknown database engine {engine!r}; choose from {', '.join(ENGINES)}")
    with throwaway_postgres() as url:
        yield url
