"""The review benchmark's database (PostgreSQL or SQLite), filled with a dataset and a review
queue, and its accounts.

Both engines get the same rows (:func:`sample_rows`, :func:`task_rows`): PostgreSQL by COPY,
SQLite by the ORM's bulk insert.
"""

from __future__ import annotations

import io
import json
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import func, insert, select, text

from app.auth import service as auth_service
from app.datasets import grants
from app.db import create_db_engine, create_session_factory, transaction
from app.migrate import upgrade
from app.models import (
    Dataset,
    ImportFormat,
    LabelClass,
    ReviewTask,
    Role,
    Sample,
    TaskKind,
    TaskState,
    TokenScope,
)
from bench.harness.databases import libpq_dsn, sqlite_url

CLASSES = 5_000
PASSWORD = "bench password 123"  # noqa: S105

SAMPLE_COLUMNS = (
    "dataset_id",
    "path",
    "class_id",
    "byte_size",
    "sha256",
    "width",
    "height",
    "mode",
    "channels",
    "image_format",
    "missing",
    "created_at",
    "updated_at",
)
TASK_COLUMNS = (
    "dataset_id",
    "kind",
    "sample_id",
    "priority",
    "score",
    "source",
    "reason",
    "suggestions",
    "state",
    "lease_version",
    "created_at",
)


# --- the rows -----------------------------------------------------------------------------------


def sample_rows(
    samples: int, *, dataset_id: int, first_class: int, now: datetime
) -> Iterator[tuple[Any, ...]]:
    """``samples`` samples spread evenly over the classes, in :data:`SAMPLE_COLUMNS` order."""
    for i in range(samples):
        yield (
            dataset_id,
            f"c{i % CLASSES}/{i}.jpg",
            first_class + i % CLASSES,
            20000,
            f"{i:064x}",
            320,
            240,
            "RGB",
            3,
            "JPEG",
            False,
            now,
            now,
        )


def task_rows(
    samples: int, tasks: int, *, dataset_id: int, first_class: int, first_sample: int, now: datetime
) -> Iterator[tuple[Any, ...]]:
    """``tasks`` pending tasks on distinct random samples, in :data:`TASK_COLUMNS` order: every
    other one a label_check with five model suggestions, the rest junk_check."""
    rng = random.Random(7)
    for index, offset in enumerate(rng.sample(range(samples), tasks)):
        suggestions: list[list[float]] | None
        if index % 2 == 0:
            picks = rng.sample(range(CLASSES), 5)
            probabilities = sorted((rng.random() for _ in picks), reverse=True)
            suggestions = [
                [first_class + c, round(p, 3)] for c, p in zip(picks, probabilities, strict=True)
            ]
            kind, score = TaskKind.LABEL_CHECK, probabilities[0]
        else:
            suggestions, kind, score = None, TaskKind.JUNK_CHECK, rng.random()
        yield (
            dataset_id,
            kind,
            first_sample + offset,
            round(score, 4),
            round(score, 4),
            "bench round",
            "flagged by the bench model",
            suggestions,
            TaskState.PENDING,
            0,
            now,
        )


# --- PostgreSQL ---------------------------------------------------------------------------------


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def _copy_rows(
    connection: psycopg.Connection[Any],
    table: str,
    columns: Sequence[str],
    rows: Iterable[tuple[Any, ...]],
) -> None:
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    with connection.cursor() as cursor, cursor.copy(statement) as copy:
        buffer = io.StringIO()
        for count, row in enumerate(rows, start=1):
            buffer.write("\t".join(map(_copy_text, row)) + "\n")
            if count % 50_000 == 0:
                copy.write(buffer.getvalue())
                buffer = io.StringIO()
        copy.write(buffer.getvalue())


def load_postgres(url: str, *, samples: int, tasks: int) -> dict[str, float]:
    """Migrates the (empty) PostgreSQL database at ``url`` and fills it by COPY; returns how long
    each step took (seconds)."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    upgrade(url)
    timings["migrate"] = time.perf_counter() - started
    now = datetime.now(UTC)
    dsn = libpq_dsn(url)
    with psycopg.connect(dsn) as connection:
        started = time.perf_counter()
        dataset_id = connection.execute(
            "INSERT INTO datasets (name, root, source, source_format, created_at) "
            "VALUES ('bench', '/data/bench', '/data/bench', 'imagefolder', now()) RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        _copy_rows(
            connection,
            "classes",
            ["dataset_id", "name", "sample_count"],
            ((dataset_id, f"class_{c:04d}", samples // CLASSES) for c in range(CLASSES)),
        )
        first_class = connection.execute(
            "SELECT min(id) FROM classes WHERE dataset_id = %s", (dataset_id,)
        ).fetchone()[0]  # type: ignore[index]
        _copy_rows(
            connection,
            "samples",
            SAMPLE_COLUMNS,
            sample_rows(samples, dataset_id=dataset_id, first_class=first_class, now=now),
        )
        timings["copy samples"] = time.perf_counter() - started
        started = time.perf_counter()
        first_sample = connection.execute(
            "SELECT min(id) FROM samples WHERE dataset_id = %s", (dataset_id,)
        ).fetchone()[0]  # type: ignore[index]
        _copy_rows(
            connection,
            "review_tasks",
            TASK_COLUMNS,
            task_rows(
                samples,
                tasks,
                dataset_id=dataset_id,
                first_class=first_class,
                first_sample=first_sample,
                now=now,
            ),
        )
        connection.commit()
        timings["copy tasks"] = time.perf_counter() - started
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
    timings["vacuum analyze"] = time.perf_counter() - started
    return timings


# --- SQLite -------------------------------------------------------------------------------------


def _chunks(
    rows: Iterator[tuple[Any, ...]], columns: Sequence[str]
) -> Iterator[list[dict[str, Any]]]:
    while chunk := [dict(zip(columns, row, strict=True)) for row in islice(rows, 20_000)]:
        yield chunk


def load_sqlite(path: Path, *, samples: int, tasks: int) -> dict[str, float]:
    """Migrates and fills a SQLite database at ``path`` with the ORM's bulk insert; returns how
    long each step took (seconds)."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    upgrade(sqlite_url(path))
    timings["migrate"] = time.perf_counter() - started
    now = datetime.now(UTC)
    engine = create_db_engine(sqlite_url(path))
    try:
        factory = create_session_factory(engine)
        started = time.perf_counter()
        with transaction(factory) as session:
            dataset = Dataset(
                name="bench",
                root="/data/bench",
                source="/data/bench",
                source_format=ImportFormat.IMAGEFOLDER,
            )
            session.add(dataset)
            session.flush()
            session.execute(
                insert(LabelClass),
                [
                    {
                        "dataset_id": dataset.id,
                        "name": f"class_{c:04d}",
                        "sample_count": samples // CLASSES,
                    }
                    for c in range(CLASSES)
                ],
            )
            first_class = session.scalar(select(func.min(LabelClass.id)))
            assert first_class is not None
            rows = sample_rows(samples, dataset_id=dataset.id, first_class=first_class, now=now)
            for chunk in _chunks(rows, SAMPLE_COLUMNS):
                session.execute(insert(Sample), chunk)
        timings["insert samples"] = time.perf_counter() - started
        started = time.perf_counter()
        with transaction(factory) as session:
            first_sample = session.scalar(select(func.min(Sample.id)))
            assert first_sample is not None
            rows = task_rows(
                samples,
                tasks,
                dataset_id=dataset.id,
                first_class=first_class,
                first_sample=first_sample,
                now=now,
            )
            for chunk in _chunks(rows, TASK_COLUMNS):
                session.execute(insert(ReviewTask), chunk)
        timings["insert tasks"] = time.perf_counter() - started
        started = time.perf_counter()
        with engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE")
        timings["analyze"] = time.perf_counter() - started
    finally:
        engine.dispose()
    return timings


# --- accounts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Browser:
    """A signed-in user: the session cookie and the CSRF token."""

    username: str
    cookie: str
    csrf: str


def sign_in(db_url: str, usernames: Sequence[str], role: Role = Role.ANNOTATOR) -> list[Browser]:
    """Creates these users, grants them every dataset, and starts a browser session for each
    (as the sign-in form would)."""
    engine = create_db_engine(db_url)
    try:
        browsers = []
        with transaction(create_session_factory(engine)) as session:
            for username in usernames:
                user, _ = auth_service.create_user(
                    session, username=username, role=role, password=PASSWORD
                )
                grants.grant(session, user=user, dataset=None, by=None)
                cookie, csrf = auth_service.start_web_session(
                    session, user=user, lifetime=timedelta(hours=6)
                )
                browsers.append(Browser(username=user.username, cookie=cookie, csrf=csrf))
        return browsers
    finally:
        engine.dispose()


def annotator_names(count: int) -> list[str]:
    return [f"annotator{index:03d}" for index in range(count)]


def engineer_token(db_url: str, username: str = "engineer") -> str:
    """Creates an engineer and an API token; returns the token's secret."""
    engine = create_db_engine(db_url)
    try:
        with transaction(create_session_factory(engine)) as session:
            user, _ = auth_service.create_user(
                session, username=username, role=Role.ENGINEER, password=PASSWORD
            )
            _, secret = auth_service.create_token(
                session, user=user, name="bench", scope=TokenScope.API
            )
        return secret
    finally:
        engine.dispose()


# --- reading the database back ------------------------------------------------------------------


def first_dataset(db_url: str) -> int:
    engine = create_db_engine(db_url)
    try:
        with engine.connect() as connection:
            found = connection.scalar(text("SELECT min(id) FROM datasets"))
    finally:
        engine.dispose()
    assert found is not None, "the database holds no dataset"
    return int(found)


def table_counts(db_url: str) -> dict[str, int]:
    queries = {
        "samples": "SELECT count(*) FROM samples",
        "pending tasks": "SELECT count(*) FROM review_tasks WHERE state = 'pending'",
        "decisions": "SELECT count(*) FROM review_decisions",
    }
    engine = create_db_engine(db_url)
    try:
        with engine.connect() as connection:
            return {name: int(connection.scalar(text(sql)) or 0) for name, sql in queries.items()}
    finally:
        engine.dispose()
