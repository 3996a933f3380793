"""Every query on datasets, classes, samples and imports.

Bulk writes go through ``insert_samples``/``insert_issues``: COPY on PostgreSQL (on the session's
own connection, so inside its transaction) and ``executemany`` on SQLite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
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
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased
from sqlalchemy.types import TypeEngine

from app.models import (
    Base,
    Dataset,
    ImportIssue,
    ImportRun,
    ImportStatus,
    IssueReason,
    LabelClass,
    Sample,
    utcnow,
)

#: Columns written for a new sample, in the order of ``NewSample``.
NEW_SAMPLE_COLUMNS = (
    "dataset_id",
    "path",
    "class_id",
    "byte_size",
    "mtime_ns",
    "sha256",
    "width",
    "height",
    "mode",
    "channels",
    "image_format",
    "error",
    "error_detail",
    "missing",
    "created_at",
    "updated_at",
)


_SAMPLES = cast(Table, Sample.__table__)


class NewSample(NamedTuple):
    dataset_id: int
    path: str
    class_id: int
    byte_size: int | None
    mtime_ns: int | None
    sha256: str | None
    width: int | None
    height: int | None
    mode: str | None
    channels: int | None
    image_format: str | None
    error: IssueReason | None
    error_detail: str | None
    missing: bool
    created_at: datetime
    updated_at: datetime


class SampleUpdate(NamedTuple):
    """New values for an existing sample (all image fields, its class, and ``missing=False``)."""

    id: int
    class_id: int
    byte_size: int | None
    mtime_ns: int | None
    sha256: str | None
    width: int | None
    height: int | None
    mode: str | None
    channels: int | None
    image_format: str | None
    error: IssueReason | None
    error_detail: str | None


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


# --- datasets -----------------------------------------------------------------------------------


def get_dataset(session: Session, dataset_id: int) -> Dataset | None:
    return session.get(Dataset, dataset_id)


def get_dataset_by_name(session: Session, name: str) -> Dataset | None:
    return session.scalars(select(Dataset).where(Dataset.name == name)).one_or_none()


def lock_dataset(session: Session, dataset_id: int) -> None:
    """Serialises imports of one dataset (PostgreSQL row lock; SQLite already locks on BEGIN)."""
    session.execute(select(Dataset.id).where(Dataset.id == dataset_id).with_for_update())


def list_datasets(session: Session) -> Sequence[Dataset]:
    return session.scalars(select(Dataset).order_by(Dataset.name)).all()


def usable_counts_by_dataset(session: Session) -> dict[int, int]:
    rows = session.execute(
        select(Sample.dataset_id, func.count())
        .where(Sample.error.is_(None), Sample.missing.is_(False))
        .group_by(Sample.dataset_id)
    )
    return {dataset_id: count for dataset_id, count in rows}


def class_counts_by_dataset(session: Session) -> dict[int, int]:
    rows = session.execute(
        select(LabelClass.dataset_id, func.count()).group_by(LabelClass.dataset_id)
    )
    return {dataset_id: count for dataset_id, count in rows}


def latest_imports(session: Session) -> dict[int, ImportRun]:
    latest = select(func.max(ImportRun.id)).group_by(ImportRun.dataset_id).scalar_subquery()
    runs = session.scalars(select(ImportRun).where(ImportRun.id.in_(latest)))
    return {run.dataset_id: run for run in runs}


# --- imports ------------------------------------------------------------------------------------


def get_import(session: Session, import_id: int) -> ImportRun | None:
    return session.get(ImportRun, import_id)


def latest_import(session: Session, dataset_id: int) -> ImportRun | None:
    return session.scalars(
        select(ImportRun)
        .where(ImportRun.dataset_id == dataset_id)
        .order_by(ImportRun.id.desc())
        .limit(1)
    ).first()


def running_import(session: Session, dataset_id: int) -> ImportRun | None:
    return session.scalars(
        select(ImportRun).where(
            ImportRun.dataset_id == dataset_id, ImportRun.status == ImportStatus.RUNNING
        )
    ).first()


def fail_running_imports(session: Session, *, reason: str) -> int:
    result = session.execute(
        update(ImportRun)
        .where(ImportRun.status == ImportStatus.RUNNING)
        .values(status=ImportStatus.FAILED, error=reason, finished_at=utcnow())
    )
    return result.rowcount  # type: ignore[attr-defined,no-any-return]


def issue_counts(session: Session, import_id: int) -> list[tuple[IssueReason, int]]:
    rows = session.execute(
        select(ImportIssue.reason, func.count().label("n"))
        .where(ImportIssue.import_id == import_id)
        .group_by(ImportIssue.reason)
        .order_by(func.count().desc(), ImportIssue.reason)
    )
    return [(reason, count) for reason, count in rows]


def list_issues(
    session: Session,
    import_id: int,
    *,
    reason: IssueReason | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[ImportIssue], int]:
    """One page of a run's issues in the order they were found, and how many match in all."""
    condition = ImportIssue.import_id == import_id
    if reason is not None:
        condition = and_(condition, ImportIssue.reason == reason)
    total = session.scalar(select(func.count()).select_from(ImportIssue).where(condition)) or 0
    page = session.scalars(
        select(ImportIssue).where(condition).order_by(ImportIssue.id).limit(limit).offset(offset)
    ).all()
    return list(page), total


def insert_issues(session: Session, issues: Sequence[NewIssue]) -> None:
    if not issues:
        return
    columns = ("import_id", "path", "reason", "detail")
    rows = [(issue.import_id, issue.path, issue.reason.value, issue.detail) for issue in issues]
    _bulk_insert(session, ImportIssue.__tablename__, columns, rows)


# --- classes ------------------------------------------------------------------------------------


def class_ids(session: Session, dataset_id: int) -> dict[str, int]:
    rows = session.execute(
        select(LabelClass.name, LabelClass.id).where(LabelClass.dataset_id == dataset_id)
    )
    return {name: class_id for name, class_id in rows}


def insert_classes(session: Session, dataset_id: int, names: Iterable[str]) -> None:
    rows = [{"dataset_id": dataset_id, "name": name, "sample_count": 0} for name in names]
    if rows:
        session.execute(insert(LabelClass), rows)


def list_classes(session: Session, dataset_id: int) -> Sequence[LabelClass]:
    return session.scalars(
        select(LabelClass)
        .where(LabelClass.dataset_id == dataset_id)
        .order_by(LabelClass.sample_count.desc(), LabelClass.name)
    ).all()


def refresh_class_counts(session: Session, dataset_id: int) -> None:
    """Sets every class's ``sample_count`` to its usable, present samples, in one statement."""
    count = (
        select(func.count())
        .select_from(Sample)
        .where(Sample.class_id == LabelClass.id, Sample.error.is_(None), Sample.missing.is_(False))
        .scalar_subquery()
    )
    session.execute(
        update(LabelClass)
        .where(LabelClass.dataset_id == dataset_id)
        .values(sample_count=count)
        .execution_options(synchronize_session=False)
    )


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
        (*sample[:11], sample.error.value if sample.error else None, *sample[12:])
        for sample in samples
    ]
    _bulk_insert(session, Sample.__tablename__, NEW_SAMPLE_COLUMNS, rows)


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
                **{name: bindparam(name) for name in SampleUpdate._fields[1:]},
                "missing": False,
                "updated_at": bindparam("_now"),
            }
        )
    )
    now = utcnow()
    params = [{**row._asdict(), "_id": row.id, "_now": now} for row in updates]
    for param in params:
        del param["id"]
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
    usable = and_(
        Sample.dataset_id == dataset_id,
        Sample.error.is_(None),
        Sample.missing.is_(False),
        Sample.sha256.is_not(None),
    )
    earlier = aliased(Sample)
    has_earlier_copy = exists().where(
        earlier.dataset_id == dataset_id,
        earlier.sha256 == Sample.sha256,
        earlier.id < Sample.id,
        earlier.error.is_(None),
        earlier.missing.is_(False),
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


def _usable(dataset_id: int) -> Any:
    return and_(Sample.dataset_id == dataset_id, Sample.error.is_(None), Sample.missing.is_(False))


def sample_counts(session: Session, dataset_id: int) -> tuple[int, int, int, int, int]:
    """(total, usable, unusable, missing, duplicates) over the dataset's samples."""
    usable = and_(Sample.error.is_(None), Sample.missing.is_(False))
    row = session.execute(
        select(
            func.count(),
            func.count().filter(usable),
            func.count().filter(Sample.error.is_not(None), Sample.missing.is_(False)),
            func.count().filter(Sample.missing.is_(True)),
            func.count().filter(usable, Sample.duplicate_of_id.is_not(None)),
        ).where(Sample.dataset_id == dataset_id)
    ).one()
    total, usable_count, unusable, missing, duplicates = row
    return total, usable_count, unusable, missing, duplicates


def mode_counts(session: Session, dataset_id: int) -> list[tuple[str, int, int]]:
    rows = session.execute(
        select(Sample.mode, Sample.channels, func.count())
        .where(_usable(dataset_id))
        .group_by(Sample.mode, Sample.channels)
        .order_by(func.count().desc(), Sample.mode)
    )
    return [(mode or "", channels or 0, count) for mode, channels, count in rows]


def _conflict_hashes(dataset_id: int) -> Any:
    return (
        select(Sample.sha256)
        .where(_usable(dataset_id), Sample.sha256.is_not(None))
        .group_by(Sample.sha256)
        .having(func.count(Sample.class_id.distinct()) > 1)
    )


def conflict_group_count(session: Session, dataset_id: int) -> int:
    subquery = _conflict_hashes(dataset_id).subquery()
    return session.scalar(select(func.count()).select_from(subquery)) or 0


def conflicts(
    session: Session, dataset_id: int, *, limit: int
) -> list[tuple[str, list[tuple[int, str, str]]]]:
    """Up to ``limit`` conflict groups by hash: [(sha256, [(sample_id, path, class_name)])]."""
    hashes = list(
        session.scalars(_conflict_hashes(dataset_id).order_by(Sample.sha256).limit(limit))
    )
    if not hashes:
        return []
    rows = session.execute(
        select(Sample.sha256, Sample.id, Sample.path, LabelClass.name)
        .join(LabelClass, LabelClass.id == Sample.class_id)
        .where(_usable(dataset_id), Sample.sha256.in_(hashes))
        .order_by(Sample.sha256, Sample.id)
    )
    groups: dict[str, list[tuple[int, str, str]]] = {sha: [] for sha in hashes}
    for sha, sample_id, path, class_name in rows:
        if sha is not None:
            groups[sha].append((sample_id, path, class_name))
    return list(groups.items())


def list_samples(
    session: Session,
    dataset_id: int,
    *,
    class_id: int | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[Sample]:
    query = select(Sample).where(Sample.dataset_id == dataset_id)
    if class_id is not None:
        query = query.where(Sample.class_id == class_id)
    if after_id is not None:
        query = query.where(Sample.id > after_id)
    return list(session.scalars(query.order_by(Sample.id).limit(limit)))


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
