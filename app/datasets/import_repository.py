"""The queries an import runs: the stored samples it compares against, and its writes in bulk —
new and changed samples, missing ones, duplicate links, issues.

Bulk inserts use COPY on PostgreSQL (on the session's own connection, so inside its transaction)
and ``executemany`` on SQLite. Every other dataset query is in :mod:`app.datasets.repository`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Integer,
    SmallInteger,
    String,
    Table,
    TypeDecorator,
    and_,
    bindparam,
    exists,
    func,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased
from sqlalchemy.types import TypeEngine

from app.datasets.probe import ProbeResult
from app.datasets.repository import usable_sample
from app.models import Base, ImportIssue, IssueReason, Sample, utcnow

#: The sample columns a probe fills, in the order of ``ProbeResult``'s fields (its ``detail`` is
#: the column ``error_detail``).
PROBED_COLUMNS = tuple({"detail": "error_detail"}.get(name, name) for name in ProbeResult._fields)
#: Columns written for a new sample, in the order of ``NewSample`` with its probe spread out.
NEW_SAMPLE_COLUMNS = (
    "dataset_id",
    "path",
    "class_id",
    *PROBED_COLUMNS,
    "missing",
    "created_at",
    "updated_at",
)
_ERROR_AT = PROBED_COLUMNS.index("error")


_SAMPLES = cast(Table, Sample.__table__)


class NewSample(NamedTuple):
    dataset_id: int
    path: str
    class_id: int
    probed: ProbeResult
    missing: bool
    created_at: datetime
    updated_at: datetime


class SampleUpdate(NamedTuple):
    """New values for an existing sample (all probed facts, its class, and ``missing=False``)."""

    id: int
    class_id: int
    probed: ProbeResult


class NewIssue(NamedTuple):
    import_id: int
    path: str
    reason: IssueReason
    detail: str


class KnownSample(NamedTuple):
    """What an import needs to know about a sample that is already stored."""

    id: int
    class_id: int
    byte_size: int | None
    mtime_ns: int | None
    sha256: str | None
    error: IssueReason | None
    error_detail: str | None
    missing: bool


# --- samples ------------------------------------------------------------------------------------


def known_samples(session: Session, dataset_id: int) -> Iterator[tuple[str, KnownSample]]:
    """Every stored sample of the dataset as (path, facts), streamed."""
    rows = session.execute(
        select(
            Sample.path,
            Sample.id,
            Sample.class_id,
            Sample.byte_size,
            Sample.mtime_ns,
            Sample.sha256,
            Sample.error,
            Sample.error_detail,
            Sample.missing,
        )
        .where(Sample.dataset_id == dataset_id)
        .execution_options(yield_per=10_000)
    )
    for path, sample_id, class_id, size, mtime_ns, sha256, error, detail, missing in rows:
        yield path, KnownSample(sample_id, class_id, size, mtime_ns, sha256, error, detail, missing)


def insert_samples(session: Session, samples: Sequence[NewSample]) -> None:
    """Inserts new samples in bulk, inside the session's transaction."""
    if not samples:
        return
    rows = [
        (
            sample.dataset_id,
            sample.path,
            sample.class_id,
            *_probed_values(sample.probed),
            sample.missing,
            sample.created_at,
            sample.updated_at,
        )
        for sample in samples
    ]
    _bulk_insert(session, Sample.__tablename__, NEW_SAMPLE_COLUMNS, rows)


def _probed_values(probed: ProbeResult) -> tuple[Any, ...]:
    """``probed`` as values for ``PROBED_COLUMNS`` in a raw insert (the issue as its text)."""
    error = probed.error
    return (*probed[:_ERROR_AT], error.value if error else None, *probed[_ERROR_AT + 1 :])


def update_samples(session: Session, updates: Sequence[SampleUpdate]) -> None:
    """Rewrites the probed facts and class of existing samples, and marks them present."""
    if not updates:
        return
    table = _SAMPLES
    statement = (
        update(table)
        .where(table.c.id == bindparam("_id"))
        .values(
            {
                **{name: bindparam(name) for name in PROBED_COLUMNS},
                "class_id": bindparam("class_id"),
                "missing": False,
                "updated_at": bindparam("_now"),
            }
        )
    )
    now = utcnow()
    params = [
        {
            **dict(zip(PROBED_COLUMNS, row.probed, strict=True)),
            "class_id": row.class_id,
            "_id": row.id,
            "_now": now,
        }
        for row in updates
    ]
    session.connection().execute(statement, params)


def set_present(session: Session, ids: Sequence[int], *, class_ids: Sequence[int]) -> None:
    """Marks unprobed samples present again under ``class_ids`` (one per id)."""
    if not ids:
        return
    table = _SAMPLES
    statement = (
        update(table)
        .where(table.c.id == bindparam("_id"))
        .values(class_id=bindparam("_class_id"), missing=False, updated_at=bindparam("_now"))
    )
    now = utcnow()
    session.connection().execute(
        statement,
        [
            {"_id": sample_id, "_class_id": class_id, "_now": now}
            for sample_id, class_id in zip(ids, class_ids, strict=True)
        ],
    )


def mark_missing(session: Session, ids: Sequence[int], *, batch: int = 1000) -> None:
    now = utcnow()
    for start in range(0, len(ids), batch):
        session.execute(
            update(Sample)
            .where(Sample.id.in_(ids[start : start + batch]))
            .values(missing=True, updated_at=now)
            .execution_options(synchronize_session=False)
        )


def link_duplicates(session: Session, dataset_id: int) -> None:
    """Points every usable copy at the lowest-id usable sample with the same SHA-256.

    Set-based: one statement clears links that no longer hold, one sets the missing or wrong
    ones; rows already right are not touched.
    """
    usable = and_(Sample.dataset_id == dataset_id, usable_sample(), Sample.sha256.is_not(None))
    earlier = aliased(Sample)
    has_earlier_copy = exists().where(
        earlier.dataset_id == dataset_id,
        earlier.sha256 == Sample.sha256,
        earlier.id < Sample.id,
        usable_sample(earlier),
    )
    session.execute(
        update(Sample)
        .where(
            Sample.dataset_id == dataset_id,
            Sample.duplicate_of_id.is_not(None),
            ~(usable & has_earlier_copy),
        )
        .values(duplicate_of_id=None)
        .execution_options(synchronize_session=False)
    )
    first = (
        select(Sample.sha256.label("sha256"), func.min(Sample.id).label("first_id"))
        .where(usable)
        .group_by(Sample.sha256)
        .having(func.count() > 1)
        .subquery()
    )
    session.execute(
        update(Sample)
        .where(
            usable,
            Sample.sha256 == first.c.sha256,
            Sample.id != first.c.first_id,
            Sample.duplicate_of_id.is_distinct_from(first.c.first_id),
        )
        .values(duplicate_of_id=first.c.first_id)
        .execution_options(synchronize_session=False)
    )


def insert_issues(session: Session, issues: Sequence[NewIssue]) -> None:
    if not issues:
        return
    columns = ("import_id", "path", "reason", "detail")
    rows = [(issue.import_id, issue.path, issue.reason.value, issue.detail) for issue in issues]
    _bulk_insert(session, ImportIssue.__tablename__, columns, rows)


# --- bulk insert --------------------------------------------------------------------------------


def _bulk_insert(
    session: Session, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    connection = session.connection()
    dialect = connection.dialect
    target = Base.metadata.tables[table]
    if dialect.name == "postgresql":
        driver = connection.connection.driver_connection
        assert driver is not None
        types = [_copy_type(target.c[name].type.dialect_impl(dialect)) for name in columns]
        statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)
        return
    # executemany on the driver, with each column's own bind processor (datetimes, booleans,
    # enums stored exactly as the ORM stores them) but without the per-row Core machinery.
    processors = [
        (index, _Memo(processor))
        for index, name in enumerate(columns)
        if (processor := target.c[name].type.dialect_impl(dialect).bind_processor(dialect))
    ]
    prepared: list[tuple[Any, ...]] = []
    for row in rows:
        values = list(row)
        for index, processor in processors:
            values[index] = processor(values[index])
        prepared.append(tuple(values))
    placeholders = ", ".join("?" for _ in columns)
    connection.exec_driver_sql(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", prepared
    )


def _copy_type(column_type: TypeEngine[Any]) -> str:
    """The PostgreSQL type name binary COPY sends a column's values as."""
    if isinstance(column_type, TypeDecorator):
        column_type = column_type.impl_instance
    for kind, name in _COPY_TYPES:
        if isinstance(column_type, kind):
            if isinstance(column_type, DateTime) and not column_type.timezone:
                return "timestamp"
            return name
    raise TypeError(f"no COPY type for {column_type!r}")


# Order matters: subclasses first (Enum is a String, BigInteger and SmallInteger are Integers).
_COPY_TYPES: tuple[tuple[type[TypeEngine[Any]], str], ...] = (
    (Boolean, "bool"),
    (BigInteger, "int8"),
    (SmallInteger, "int2"),
    (Integer, "int4"),
    (DateTime, "timestamptz"),
    (String, "text"),  # Text, VARCHAR and non-native enums: the same bytes in binary COPY
)


class _Memo:
    """A bind processor that reuses its last result for the very same input object.

    Bulk rows repeat the same objects (one timestamp per batch, None, False), so most calls
    are an identity check.
    """

    def __init__(self, processor: Callable[[Any], Any]) -> None:
        self.processor = processor
        self.last_in: Any = object()
        self.last_out: Any = None

    def __call__(self, value: Any) -> Any:
        if value is not self.last_in:
            self.last_in, self.last_out = value, self.processor(value)
        return self.last_out
